#include "engine/cache/block_table.h"

#include <cassert>

namespace r2::cache {

BlockTable::~BlockTable() { assert(blocks_.empty() && "BlockTable dropped without ReleaseAll"); }

int32_t BlockTable::Exchange(int32_t i, int32_t block) {
  const int32_t old = blocks_[i];
  blocks_[i] = block;
  return old;
}

void BlockTable::ForkFrom(const BlockTable& parent, BlockPool& pool) {
  assert(blocks_.empty());
  blocks_.reserve(parent.blocks_.size());
  for (int32_t block : parent.blocks_) {
    pool.Acquire(block);
    blocks_.push_back(block);
  }
  num_registered_ = parent.num_registered_;
}

void BlockTable::ReleaseAll(BlockPool& pool) {
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) pool.Release(*it);
  blocks_.clear();
  num_registered_ = 0;
}

}  // namespace r2::cache
