#include "engine/cache/block_hash.h"

#include <vector>

#include "gtest/gtest.h"

namespace r2::cache {
namespace {

TEST(BlockHashTest, EqualPrefixesGiveEqualChains) {
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const std::vector<int32_t> b = {5, 6, 7, 8};
  const BlockHash root = RootBlockHash("");
  EXPECT_EQ(ChainBlockHash(ChainBlockHash(root, a), b), ChainBlockHash(ChainBlockHash(root, a), b));
}

TEST(BlockHashTest, TheParentMatters) {
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const std::vector<int32_t> b = {5, 6, 7, 8};
  const BlockHash root = RootBlockHash("");
  // Same block contents after different prefixes: different hashes.
  EXPECT_FALSE(ChainBlockHash(ChainBlockHash(root, a), b) ==
               ChainBlockHash(ChainBlockHash(root, b), b));
  EXPECT_FALSE(ChainBlockHash(root, b) == ChainBlockHash(ChainBlockHash(root, a), b));
}

TEST(BlockHashTest, TokenBytesAreNotConfusable) {
  const BlockHash root = RootBlockHash("");
  EXPECT_FALSE(ChainBlockHash(root, std::vector<int32_t>{256, 0}) ==
               ChainBlockHash(root, std::vector<int32_t>{1, 0}));
  EXPECT_FALSE(ChainBlockHash(root, std::vector<int32_t>{0}) ==
               ChainBlockHash(root, std::vector<int32_t>{0, 0}));
}

TEST(BlockHashTest, SaltsSeparateTenants) {
  EXPECT_EQ(RootBlockHash(""), BlockHash{});
  EXPECT_FALSE(RootBlockHash("tenant-a") == RootBlockHash("tenant-b"));
  EXPECT_FALSE(RootBlockHash("tenant-a") == RootBlockHash(""));
  const std::vector<int32_t> a = {1, 2, 3, 4};
  EXPECT_FALSE(ChainBlockHash(RootBlockHash("tenant-a"), a) ==
               ChainBlockHash(RootBlockHash("tenant-b"), a));
}

}  // namespace
}  // namespace r2::cache
