#include "engine/cache/block_pool.h"

#include <numeric>
#include <vector>

#include "engine/cache/block_hash.h"
#include "engine/cache/block_table.h"
#include "gtest/gtest.h"

namespace r2::cache {
namespace {

constexpr int32_t kBlockSize = 4;

BlockPool MakePool(int32_t num_blocks) {
  absl::StatusOr<BlockPool> pool = BlockPool::Create(num_blocks, kBlockSize);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

std::vector<int32_t> Tokens(int32_t first) {
  std::vector<int32_t> t(kBlockSize);
  std::iota(t.begin(), t.end(), first);
  return t;
}

BlockHash HashOf(const std::vector<int32_t>& tokens) {
  return ChainBlockHash(RootBlockHash(""), tokens);
}

// Reference counts as given, for CheckIntegrity.
std::vector<int32_t> Refs(const BlockPool& pool) {
  std::vector<int32_t> refs(pool.num_blocks());
  for (int32_t b = 0; b < pool.num_blocks(); ++b) refs[b] = pool.ref_count(b);
  return refs;
}

TEST(NumBlocksForBudgetTest, DividesTheBudget) {
  // 1 GiB at 70 KiB per token (a DeepSeek-V3 latent cache is about that) in 64-token blocks.
  absl::StatusOr<int32_t> n = NumBlocksForBudget(int64_t{1} << 30, 70 * 1024, 64);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, (int64_t{1} << 30) / (70 * 1024 * 64));
  EXPECT_EQ(*NumBlocksForBudget(1000, 10, 10), 10);
  EXPECT_EQ(*NumBlocksForBudget(1099, 10, 10), 10);
}

TEST(NumBlocksForBudgetTest, RejectsBadInput) {
  EXPECT_FALSE(NumBlocksForBudget(0, 10, 10).ok());
  EXPECT_FALSE(NumBlocksForBudget(1000, 0, 10).ok());
  EXPECT_FALSE(NumBlocksForBudget(1000, 10, 0).ok());
  EXPECT_FALSE(NumBlocksForBudget(99, 10, 10).ok());                  // smaller than one block
  EXPECT_FALSE(NumBlocksForBudget(1000, int64_t{1} << 62, 64).ok());  // overflow
}

TEST(BlockPoolTest, CreateRejectsBadSizes) {
  EXPECT_FALSE(BlockPool::Create(0, 4).ok());
  EXPECT_FALSE(BlockPool::Create(4, 0).ok());
}

TEST(BlockPoolTest, AllocateAndReleaseCountReferences) {
  BlockPool pool = MakePool(3);
  EXPECT_EQ(pool.num_free(), 3);
  const int32_t a = pool.Allocate();
  const int32_t b = pool.Allocate();
  const int32_t c = pool.Allocate();
  EXPECT_EQ(pool.Allocate(), kNoBlock);
  EXPECT_EQ(pool.num_in_use(), 3);
  pool.Acquire(a);
  EXPECT_EQ(pool.ref_count(a), 2);
  pool.Release(a);
  pool.Release(a);
  pool.Release(b);
  pool.Release(c);
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_TRUE(pool.CheckIntegrity(Refs(pool)).ok());
}

TEST(BlockPoolTest, RegisteredBlockIsFoundAndVerified) {
  BlockPool pool = MakePool(4);
  const int32_t b = pool.Allocate();
  const std::vector<int32_t> tokens = Tokens(10);
  const BlockHash hash = HashOf(tokens);
  ASSERT_TRUE(pool.Register(b, hash, tokens));
  EXPECT_FALSE(pool.Register(b, hash, tokens));  // already hashed
  EXPECT_EQ(pool.Lookup(hash, tokens), b);
  // A hash that matches with different stored tokens is a miss: wrong KV is never returned.
  EXPECT_EQ(pool.Lookup(hash, Tokens(11)), kNoBlock);
  EXPECT_EQ(pool.Lookup(HashOf(Tokens(11)), Tokens(11)), kNoBlock);
  // Released, it is cached (not free) and still found; acquiring it takes it back out.
  pool.Release(b);
  EXPECT_EQ(pool.num_cached(), 1);
  EXPECT_EQ(pool.num_free(), 3);
  ASSERT_EQ(pool.Lookup(hash, tokens), b);
  pool.Acquire(b);
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.ref_count(b), 1);
  EXPECT_TRUE(pool.CheckIntegrity(Refs(pool)).ok());
  pool.Release(b);
}

TEST(BlockPoolTest, SecondBlockWithSameHashIsNotIndexed) {
  BlockPool pool = MakePool(4);
  const std::vector<int32_t> tokens = Tokens(1);
  const int32_t first = pool.Allocate();
  const int32_t second = pool.Allocate();
  EXPECT_TRUE(pool.Register(first, HashOf(tokens), tokens));
  EXPECT_FALSE(pool.Register(second, HashOf(tokens), tokens));
  EXPECT_FALSE(pool.is_hashed(second));
  pool.Release(second);
  EXPECT_EQ(pool.num_free(), 3);  // unhashed: straight back to free
  pool.Release(first);
  EXPECT_EQ(pool.num_cached(), 1);
}

TEST(BlockPoolTest, EvictsOnlyWhenNothingIsFreeLeastRecentlyUsedFirst) {
  BlockPool pool = MakePool(3);
  std::vector<int32_t> blocks;
  for (int i = 0; i < 3; ++i) {
    blocks.push_back(pool.Allocate());
    ASSERT_TRUE(pool.Register(blocks[i], HashOf(Tokens(100 * i)), Tokens(100 * i)));
  }
  pool.Release(blocks[1]);  // least recently used
  pool.Release(blocks[0]);
  EXPECT_EQ(pool.num_cached(), 2);
  EXPECT_EQ(pool.num_available(), 2);
  // Touch blocks[1]: acquire and release makes it the most recently used.
  pool.Acquire(blocks[1]);
  pool.Release(blocks[1]);
  const int32_t evicted = pool.Allocate();
  EXPECT_EQ(evicted, blocks[0]);
  EXPECT_EQ(pool.num_evictions(), 1);
  EXPECT_FALSE(pool.is_hashed(evicted));
  EXPECT_EQ(pool.Lookup(HashOf(Tokens(0)), Tokens(0)), kNoBlock);
  EXPECT_EQ(pool.Lookup(HashOf(Tokens(100)), Tokens(100)), blocks[1]);
  EXPECT_TRUE(pool.CheckIntegrity(Refs(pool)).ok());
}

TEST(BlockPoolTest, FreeBlocksAreUsedBeforeCachedOnes) {
  BlockPool pool = MakePool(2);
  const int32_t a = pool.Allocate();
  ASSERT_TRUE(pool.Register(a, HashOf(Tokens(0)), Tokens(0)));
  pool.Release(a);
  const int32_t b = pool.Allocate();
  EXPECT_NE(b, a);
  EXPECT_EQ(pool.num_evictions(), 0);
  EXPECT_EQ(pool.Lookup(HashOf(Tokens(0)), Tokens(0)), a);
  pool.Release(b);
}

TEST(BlockPoolTest, IntegrityCheckReportsWrongReferenceCounts) {
  BlockPool pool = MakePool(2);
  const int32_t a = pool.Allocate();
  std::vector<int32_t> refs = Refs(pool);
  EXPECT_TRUE(pool.CheckIntegrity(refs).ok());
  refs[a] = 2;
  absl::Status s = pool.CheckIntegrity(refs);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("ref_count"), std::string::npos) << s;
  refs[a] = 0;
  EXPECT_FALSE(pool.CheckIntegrity(refs).ok());
  EXPECT_FALSE(pool.CheckIntegrity(std::vector<int32_t>(5, 0)).ok());
  pool.Release(a);
}

TEST(BlockTableTest, ForkSharesAndReleaseReturnsEverything) {
  BlockPool pool = MakePool(4);
  BlockTable parent;
  parent.Append(pool.Allocate());
  parent.Append(pool.Allocate());
  BlockTable child;
  child.ForkFrom(parent, pool);
  EXPECT_EQ(pool.ref_count(parent.blocks()[0]), 2);
  EXPECT_EQ(pool.ref_count(parent.blocks()[1]), 2);
  // Copy-on-write of the last block: the child gets a fresh one and owns the old reference.
  const int32_t fresh = pool.Allocate();
  const int32_t old = child.Exchange(1, fresh);
  EXPECT_EQ(old, parent.blocks()[1]);
  pool.Release(old);
  EXPECT_EQ(pool.ref_count(parent.blocks()[1]), 1);
  child.ReleaseAll(pool);
  parent.ReleaseAll(pool);
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_TRUE(pool.CheckIntegrity(Refs(pool)).ok());
}

TEST(BlockTableTest, ReleaseAllEvictsTheChainTailFirst) {
  BlockPool pool = MakePool(2);
  BlockTable table;
  for (int i = 0; i < 2; ++i) {
    table.Append(pool.Allocate());
    ASSERT_TRUE(pool.Register(table.blocks()[i], HashOf(Tokens(10 * i)), Tokens(10 * i)));
  }
  const int32_t head = table.blocks()[0];
  const int32_t tail = table.blocks()[1];
  table.ReleaseAll(pool);
  EXPECT_EQ(pool.Allocate(), tail);  // a tail without its head is useless; it goes first
  EXPECT_EQ(pool.Lookup(HashOf(Tokens(0)), Tokens(0)), head);
  pool.Release(tail);
}

}  // namespace
}  // namespace r2::cache
