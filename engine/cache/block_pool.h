#pragma once
// BlockPool: the fixed set of KV-cache blocks (block_size token slots each), their reference
// counts, and the prefix cache over them. It holds no KV data: it hands out block ids that index
// the model runner's KV tensors.
//
// Every block is in exactly one of three places:
//   free    ref_count == 0, no hash          (a stack; allocation takes from here first)
//   cached  ref_count == 0, hashed           (least-recently-used list; evicted only when free is
//   empty) in use  ref_count  > 0, hashed or not    (owned by one or more block tables)
// A hashed block is one whose block_size tokens were fully computed and registered under their
// BlockHash chain; Lookup finds it (in use or cached) so another sequence can Acquire it instead of
// recomputing. Eviction drops a cached block's hash and hands it out as a fresh block.
//
// Contract: the caller (the scheduler) owns all mutation, from one thread. Allocate may evict, so a
// caller that matched cached blocks must Acquire them before it Allocates (else it may evict what
// it just matched). Passing an id that is out of range or in the wrong place is a caller bug
// (assert). CheckIntegrity verifies the accounting above against the reference counts the caller
// expects.
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/cache/block_hash.h"

namespace r2::cache {

inline constexpr int32_t kNoBlock = -1;
inline constexpr int32_t kDefaultBlockSize = 64;

// How many blocks of block_size tokens fit in budget_bytes when one token of KV (all layers) takes
// bytes_per_token bytes. Errors on non-positive inputs, overflow, or a budget smaller than one
// block.
absl::StatusOr<int32_t> NumBlocksForBudget(int64_t budget_bytes, int64_t bytes_per_token,
                                           int32_t block_size = kDefaultBlockSize);

class BlockPool {
 public:
  // Errors on num_blocks < 1 or block_size < 1.
  static absl::StatusOr<BlockPool> Create(int32_t num_blocks,
                                          int32_t block_size = kDefaultBlockSize);

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  int32_t block_size() const { return block_size_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_cached() const { return num_cached_; }
  int32_t num_in_use() const { return num_blocks() - num_free() - num_cached(); }
  // Blocks Allocate can hand out right now (free + cached).
  int32_t num_available() const { return num_free() + num_cached(); }
  int32_t ref_count(int32_t block) const { return blocks_[block].ref_count; }
  bool is_hashed(int32_t block) const { return blocks_[block].hashed; }
  int64_t num_evictions() const { return num_evictions_; }

  // A block with ref_count 1: a free one, else the least recently used cached one (its hash is
  // dropped). kNoBlock when none is available.
  int32_t Allocate();
  // ref_count + 1 on a block that is in use or cached (a cached block leaves the LRU list).
  void Acquire(int32_t block);
  // ref_count - 1; at zero the block becomes cached (if hashed, as most recently used) or free.
  void Release(int32_t block);

  // The block registered under hash whose stored tokens equal tokens, else kNoBlock. Does not
  // change reference counts or recency.
  int32_t Lookup(const BlockHash& hash, absl::Span<const int32_t> tokens) const;
  // Records that in-use block now holds the computed, full tokens (block_size of them) whose chain
  // hash is hash. Returns false (and changes nothing) if the block is already hashed or another
  // block already holds this hash: the first copy stays the one that is shared.
  bool Register(int32_t block, const BlockHash& hash, absl::Span<const int32_t> tokens);

  // OK when free + cached + in use == total, every list and the hash index agree with each block's
  // state, and ref_count(b) == expected_ref_counts[b] for every block (the caller counts the
  // references its block tables hold). Internal error naming the first violation otherwise.
  absl::Status CheckIntegrity(absl::Span<const int32_t> expected_ref_counts) const;

 private:
  struct Block {
    int32_t ref_count = 0;
    bool hashed = false;
    int32_t lru_prev = kNoBlock;  // neighbours in the cached list (towards the head)
    int32_t lru_next = kNoBlock;  // (towards the tail)
    BlockHash hash;
  };

  BlockPool(int32_t num_blocks, int32_t block_size);
  void LruPushBack(int32_t block);
  void LruRemove(int32_t block);
  void DropHash(int32_t block);
  absl::Span<const int32_t> StoredTokens(int32_t block) const;
  absl::Status CheckLists(int32_t* num_listed) const;
  absl::Status CheckIndex() const;

  int32_t block_size_;
  std::vector<Block> blocks_;
  int32_t lru_head_ = kNoBlock;  // least recently used cached block
  int32_t lru_tail_ = kNoBlock;  // most recently used cached block
  int32_t num_cached_ = 0;
  std::vector<int32_t> free_;           // stack of free block ids
  std::vector<int32_t> stored_tokens_;  // [num_blocks * block_size]: tokens of hashed blocks
  std::unordered_map<BlockHash, int32_t, BlockHashHasher> index_;
  int64_t num_evictions_ = 0;
};

}  // namespace r2::cache
