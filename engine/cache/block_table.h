#pragma once
// BlockTable: the KV blocks of one sequence, in token order: token position p lives in block
// blocks()[p / block_size] at slot p % block_size. Each entry holds one reference on its block in
// the BlockPool; the table's owner must ReleaseAll before dropping it (the destructor asserts it
// did).
//
// Entries below num_registered() are full, computed blocks that were already offered to the prefix
// cache (BlockPool::Register), so registration after each step only looks at the new ones.
// Not thread-safe; used by the scheduler's thread only.
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/cache/block_pool.h"

namespace r2::cache {

class BlockTable {
 public:
  BlockTable() = default;
  BlockTable(BlockTable&&) = default;
  BlockTable& operator=(BlockTable&&) = default;
  ~BlockTable();

  absl::Span<const int32_t> blocks() const { return blocks_; }
  int32_t size() const { return static_cast<int32_t>(blocks_.size()); }
  bool empty() const { return blocks_.empty(); }
  int32_t num_registered() const { return num_registered_; }
  void set_num_registered(int32_t n) { num_registered_ = n; }

  // Takes ownership of one reference on block (from Allocate or Acquire).
  void Append(int32_t block) { blocks_.push_back(block); }
  // Puts block (one reference, owned) at index i and returns the block that was there; the caller
  // now owns that reference (copy-on-write keeps it until the copy has run).
  int32_t Exchange(int32_t i, int32_t block);
  // Shares every block of parent: one more reference each.
  void ForkFrom(const BlockTable& parent, BlockPool& pool);
  // Releases every block, last first (so a chain's tail is evicted before its head), and empties.
  void ReleaseAll(BlockPool& pool);

 private:
  std::vector<int32_t> blocks_;
  int32_t num_registered_ = 0;
};

}  // namespace r2::cache
