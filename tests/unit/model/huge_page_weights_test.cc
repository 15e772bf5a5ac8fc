#include "engine/model/huge_page_weights.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "engine/model/safetensors.h"
#include "tests/unit/test_paths.h"

namespace r2::model {
namespace {

// The permissions column of /proc/self/maps for the mapping holding `p` ("" when none).
std::string Permissions(const void* p) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto at = reinterpret_cast<uintptr_t>(p);
  while (std::getline(maps, line)) {
    unsigned long long lo = 0, hi = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%llx-%llx %7s", &lo, &hi, perms) == 3 && at >= lo && at < hi) {
      return perms;
    }
  }
  return "";
}

// A safetensors file of three tensors whose bytes follow a pattern; `big` spans several chunks
// of the move (64 MiB) and ends inside a page.
std::string WriteFile(const std::string& dir, int64_t big_elems) {
  SafetensorsWriter w;
  std::vector<uint8_t> a(6 * 2), big(big_elems * 2), c(7 * 4);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(3 * i + 1);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint8_t>(255 - i);
  w.Add("a", DType::kBF16, {2, 3}, a);
  w.Add("big", DType::kBF16, {big_elems}, big);
  w.Add("c", DType::kF32, {7}, c);
  const std::string path = dir + "/w.safetensors";
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

std::vector<uint8_t> Copy(const TensorView& t) {
  const auto* p = static_cast<const uint8_t*>(t.data);
  return std::vector<uint8_t>(p, p + t.numel() * static_cast<int64_t>(DTypeSize(t.dtype)));
}

TEST(HugePageWeightsTest, MappingStartsOnAHugePageBoundary) {
  const std::string dir = r2::testing::MakeTempDir("hp-align");
  auto file = SafetensorsFile::Open(WriteFile(dir, 1000));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*file)->mapping().data()) % kHugePageBytes, 0u);
}

// The move keeps every byte at its address (views taken before it stay valid) and leaves the
// range read-only and anonymous.
TEST(HugePageWeightsTest, MoveKeepsBytesAndAddresses) {
  const std::string dir = r2::testing::MakeTempDir("hp-move");
  const int64_t big_elems = (int64_t{140} << 20) / 2 + 777;  // 140 MiB + 1554 bytes: 3 chunks
  auto file = SafetensorsFile::Open(WriteFile(dir, big_elems));
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<TensorView> views;
  std::vector<std::vector<uint8_t>> before;
  for (const char* name : {"a", "big", "c"}) {
    auto t = (*file)->Get(name);
    ASSERT_TRUE(t.ok()) << t.status();
    views.push_back(*t);
    before.push_back(Copy(*t));
  }
  const absl::Span<const uint8_t> mapping = (*file)->mapping();
  EXPECT_NE(Permissions(mapping.data()), "");

  HugePageMove moved;
  ASSERT_TRUE(MoveToHugePages(mapping, &moved).ok());
  const int64_t page = ::sysconf(_SC_PAGESIZE);
  EXPECT_EQ(moved.bytes, (static_cast<int64_t>(mapping.size()) + page - 1) / page * page);
  EXPECT_GE(moved.seconds, 0.0);
  for (size_t i = 0; i < views.size(); ++i) {
    auto again = (*file)->Get(i == 0 ? "a" : i == 1 ? "big" : "c");
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->data, views[i].data) << i;
    EXPECT_EQ(Copy(views[i]), before[i]) << i;
  }
  // Read-only, private, no longer the file's pages (anonymous mappings show no inode path).
  for (size_t off : {size_t{0}, mapping.size() / 2, mapping.size() - 1}) {
    EXPECT_EQ(Permissions(mapping.data() + off), "r--p") << off;
  }
  const absl::Span<const uint8_t> ranges[] = {mapping};
  const int64_t huge = AnonHugePageBytes(ranges);
  EXPECT_GE(huge, 0);
  EXPECT_LE(huge, moved.bytes);
  EXPECT_EQ(huge % static_cast<int64_t>(kHugePageBytes), 0);
}

TEST(HugePageWeightsTest, EmptyMappingMovesNothing) {
  HugePageMove moved;
  EXPECT_TRUE(MoveToHugePages({}, &moved).ok());
  EXPECT_EQ(moved.bytes, 0);
}

TEST(HugePageWeightsTest, UnalignedMappingIsRefused) {
  std::vector<uint8_t> buffer(8192);
  const uint8_t* odd = buffer.data() + 1;  // vector storage is at least 8-aligned: +1 never is
  HugePageMove moved;
  absl::Status s = MoveToHugePages({odd, 100}, &moved);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("page-aligned"), std::string::npos);
  EXPECT_EQ(moved.bytes, 0);
}

TEST(HugePageWeightsTest, EnvironmentTurnsItOff) {
  const std::string dir = r2::testing::MakeTempDir("hp-env");
  auto file = SafetensorsFile::Open(WriteFile(dir, 1 << 20));
  ASSERT_TRUE(file.ok()) << file.status();
  const absl::Span<const uint8_t> mappings[] = {(*file)->mapping()};
  ::setenv("R2_HUGE_PAGE_WEIGHTS", "0", 1);
  EXPECT_FALSE(HugePageWeightsEnabled());
  const HugePageMove off = PlaceWeightsInHugePages(mappings);
  ::unsetenv("R2_HUGE_PAGE_WEIGHTS");
  EXPECT_EQ(off.bytes, 0);
  EXPECT_TRUE(HugePageWeightsEnabled());
  if (AvailableMemoryBytes() < (int64_t{2} << 30)) GTEST_SKIP() << "under 2 GiB available";
  const HugePageMove on = PlaceWeightsInHugePages(mappings);
  EXPECT_GT(on.bytes, 0);
  auto t = (*file)->Get("a");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(static_cast<const uint8_t*>(t->data)[1], 4);
}

}  // namespace
}  // namespace r2::model
