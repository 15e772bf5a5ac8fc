#include "engine/model/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "tests/unit/test_paths.h"

namespace r2::model {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> Bytes(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i);
  return v;
}

// A file image from a raw header and `data_size` bytes of data.
std::vector<uint8_t> Image(const std::string& header, size_t data_size) {
  std::vector<uint8_t> file(8);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<uint8_t>(n >> (8 * i));
  file.insert(file.end(), header.begin(), header.end());
  file.resize(file.size() + data_size, 0xab);
  return file;
}

absl::StatusOr<std::map<std::string, SafetensorsEntry>> Parse(const std::vector<uint8_t>& file) {
  return ParseSafetensors(absl::MakeConstSpan(file), "w.safetensors");
}

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(SafetensorsTest, DTypeNamesRoundTrip) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kI8, DType::kU8,
                  DType::kI32, DType::kI64}) {
    auto back = DTypeFromSafetensors(DTypeToSafetensors(d));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, d);
  }
  EXPECT_EQ(DTypeToSafetensors(DType::kF8E4M3), "F8_E4M3");
  for (const char* bad : {"F64", "BOOL", "F8_E5M2", "bf16", ""}) {
    auto d = DTypeFromSafetensors(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_THAT(d.status().message(), HasSubstr("unsupported dtype"));
  }
}

TEST(SafetensorsTest, WriterRoundTrip) {
  const std::string dir = r2::testing::MakeTempDir("st-roundtrip");
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  w.Add("b.weight", DType::kBF16, {2, 3}, Bytes(12, 1));
  w.Add("a.bias", DType::kF32, {3}, Bytes(12, 100));
  w.Add("scalar", DType::kI64, {}, Bytes(8, 7));
  w.Add("empty", DType::kF8E4M3, {0, 4}, {});
  w.Add("u", DType::kU8, {5}, Bytes(5, 50));
  EXPECT_EQ(w.data_size(), 37u);
  const std::string path = dir + "/m.safetensors";
  ASSERT_TRUE(w.Write(path).ok());

  const std::vector<uint8_t> raw = ReadAll(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string header(raw.begin() + 8, raw.begin() + 8 + n);
  // Insertion order is kept in the header.
  EXPECT_LT(header.find("b.weight"), header.find("a.bias"));
  EXPECT_EQ(header.find("\"__metadata__\""), 1u);

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->entries().size(), 5u);
  auto t = (*file)->Get("b.weight");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->dtype, DType::kBF16);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(t->data, Bytes(12, 1).data(), 12), 0);
  auto a = (*file)->Get("a.bias");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(std::memcmp(a->data, Bytes(12, 100).data(), 12), 0);
  auto s = (*file)->Get("scalar");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numel(), 1);
  EXPECT_TRUE((*file)->Has("empty"));
  auto missing = (*file)->Get("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("m.safetensors"));

  // Deterministic: writing again gives the same bytes.
  ASSERT_TRUE(w.Write(dir + "/m2.safetensors").ok());
  EXPECT_EQ(ReadAll(dir + "/m2.safetensors"), raw);
}

TEST(SafetensorsTest, WriterRejectsSizeMismatch) {
  SafetensorsWriter w;
  w.Add("x", DType::kF32, {3}, Bytes(11));
  const absl::Status s = w.Write(r2::testing::MakeTempDir("st-bad") + "/x.safetensors");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("'x'"));
}

TEST(SafetensorsTest, WriterReportsUnwritablePath) {
  SafetensorsWriter w;
  const absl::Status s = w.Write("/nonexistent-r2-dir/x.safetensors");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent-r2-dir/x.safetensors"));
}

TEST(SafetensorsTest, OpenMissingFile) {
  auto f = SafetensorsFile::Open("/nonexistent-r2-dir/x.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("/nonexistent-r2-dir/x.safetensors"));
}

TEST(SafetensorsTest, OpenRejectsTruncatedFile) {
  const std::string dir = r2::testing::MakeTempDir("st-trunc");
  SafetensorsWriter w;
  w.Add("t", DType::kF32, {4}, Bytes(16));
  ASSERT_TRUE(w.Write(dir + "/t.safetensors").ok());
  std::vector<uint8_t> raw = ReadAll(dir + "/t.safetensors");
  raw.resize(raw.size() - 1);
  std::ofstream(dir + "/cut.safetensors", std::ios::binary)
      .write(reinterpret_cast<const char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
  auto f = SafetensorsFile::Open(dir + "/cut.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("cut.safetensors"));
  EXPECT_THAT(f.status().message(), HasSubstr("tensor 't'"));
  std::ofstream(dir + "/empty.safetensors", std::ios::binary);
  f = SafetensorsFile::Open(dir + "/empty.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("shorter than the 8-byte header"));
}

TEST(SafetensorsTest, ParsesValidImage) {
  auto e = Parse(Image(R"({"__metadata__":{"format":"pt"},)"
                       R"("a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                       12));
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ(e->at("b").begin, 8u);
  EXPECT_EQ(e->at("b").end, 12u);
  EXPECT_EQ(e->at("a").dtype, DType::kBF16);
}

struct Malformed {
  const char* name;
  std::vector<uint8_t> image;
  const char* expect;  // a substring of the message
  const char* tensor;  // the tensor the message must name, or nullptr
};

std::vector<uint8_t> WithLength(uint64_t n, size_t total) {
  std::vector<uint8_t> file(total, ' ');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<uint8_t>(n >> (8 * i));
  return file;
}

std::vector<Malformed> MalformedCases() {
  const std::string ok = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  return {
      {"Empty", {}, "shorter than the 8-byte header", nullptr},
      {"SevenBytes", std::vector<uint8_t>(7, 0), "shorter than the 8-byte header", nullptr},
      {"HeaderPastEnd", WithLength(100, 50), "runs past the end", nullptr},
      {"HeaderHuge", WithLength(uint64_t{1} << 62, 64), "exceeds", nullptr},
      {"HeaderMaxU64", WithLength(~uint64_t{0}, 64), "exceeds", nullptr},
      {"HeaderNotJson", Image("{not json", 0), "not valid JSON", nullptr},
      {"HeaderEmpty", Image("", 0), "not valid JSON", nullptr},
      {"HeaderArray", Image("[1,2,3]", 0), "not an object", nullptr},
      {"HeaderString", Image("\"x\"", 0), "not an object", nullptr},
      {"MetadataNotObject", Image(R"({"__metadata__":[1]})", 0), "__metadata__", nullptr},
      {"MetadataValueNotString", Image(R"({"__metadata__":{"a":1}})", 0), "__metadata__", nullptr},
      {"EntryNotObject", Image(R"({"t":[1]})", 0), "not a JSON object", "t"},
      {"DtypeMissing", Image(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", 4), "dtype", "t"},
      {"DtypeNotString", Image(R"({"t":{"dtype":1,"shape":[1],"data_offsets":[0,4]}})", 4), "dtype",
       "t"},
      {"UnknownDtype", Image(R"({"t":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
       "unsupported dtype 'F64'", "t"},
      {"BoolDtype", Image(R"({"t":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", 1),
       "unsupported dtype 'BOOL'", "t"},
      {"ShapeMissing", Image(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", 4), "shape", "t"},
      {"ShapeNotList", Image(R"({"t":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", 16),
       "shape", "t"},
      {"NegativeDim", Image(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
       "non-negative", "t"},
      {"FractionalDim", Image(R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
       "non-negative", "t"},
      {"OffsetsMissing", Image(R"({"t":{"dtype":"F32","shape":[1]}})", 4), "data_offsets", "t"},
      {"OffsetsWrongLength",
       Image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 8), "data_offsets",
       "t"},
      {"OffsetsNegative", Image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4),
       "data_offsets", "t"},
      {"OffsetsOutOfRange", Image("{\"t\":{" + ok + "}}", 4), "past the data section", "t"},
      {"OffsetsHuge",
       Image(
           R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]}})",
           4),
       "past the data section", "t"},
      {"EndBeforeBegin", Image(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8),
       "end 4 < begin 8", "t"},
      {"SizeMismatch", Image(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "needs 12", "t"},
      {"ShapeOverflow",
       Image(R"({"t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})",
             8),
       "overflows", "t"},
      {"ShapeOverflowByDtype",
       Image(R"({"t":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       "overflows", "t"},
      {"Overlap",
       Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
             12),
       "overlaps tensor 'a'", "b"},
      {"Duplicate",
       Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
             8),
       "overlaps", "b"},
  };
}

TEST(SafetensorsTest, EveryMalformedImageIsAnErrorNamingFileAndTensor) {
  for (const Malformed& m : MalformedCases()) {
    auto e = Parse(m.image);
    ASSERT_FALSE(e.ok()) << m.name;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << m.name;
    EXPECT_THAT(e.status().message(), HasSubstr("w.safetensors")) << m.name;
    EXPECT_THAT(e.status().message(), HasSubstr(m.expect)) << m.name;
    if (m.tensor != nullptr) {
      EXPECT_THAT(e.status().message(), HasSubstr(std::string("tensor '") + m.tensor + "'"))
          << m.name;
    }
  }
}

TEST(SafetensorsTest, EveryTruncationOfAValidFileIsAnError) {
  std::vector<uint8_t> image =
      Image(R"({"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}})", 8);
  ASSERT_TRUE(Parse(image).ok());
  for (size_t n = 0; n < image.size(); ++n) {
    std::vector<uint8_t> cut(image.begin(), image.begin() + n);
    EXPECT_FALSE(Parse(cut).ok()) << n;
  }
}

TEST(SafetensorsTest, EmptyTensorsDoNotOverlap) {
  auto e = Parse(Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                       8));
  EXPECT_TRUE(e.ok()) << e.status();
}

}  // namespace
}  // namespace r2::model
