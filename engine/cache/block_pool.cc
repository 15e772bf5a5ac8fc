#include "engine/cache/block_pool.h"

#include <algorithm>
#include <cassert>
#include <limits>

#include "absl/strings/str_format.h"

namespace r2::cache {

absl::StatusOr<int32_t> NumBlocksForBudget(int64_t budget_bytes, int64_t bytes_per_token,
                                           int32_t block_size) {
  if (budget_bytes <= 0) return absl::InvalidArgumentError("kv cache budget_bytes must be > 0");
  if (bytes_per_token <= 0) return absl::InvalidArgumentError("kv bytes_per_token must be > 0");
  if (block_size <= 0) return absl::InvalidArgumentError("kv block_size must be > 0");
  if (bytes_per_token > std::numeric_limits<int64_t>::max() / block_size) {
    return absl::InvalidArgumentError("kv bytes_per_token * block_size overflows");
  }
  const int64_t bytes_per_block = bytes_per_token * block_size;
  const int64_t blocks = budget_bytes / bytes_per_block;
  if (blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("kv cache budget of %d bytes is smaller than one block (%d bytes)",
                        budget_bytes, bytes_per_block));
  }
  return static_cast<int32_t>(std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max() - 1));
}

absl::StatusOr<BlockPool> BlockPool::Create(int32_t num_blocks, int32_t block_size) {
  if (num_blocks < 1) return absl::InvalidArgumentError("kv num_blocks must be >= 1");
  if (block_size < 1) return absl::InvalidArgumentError("kv block_size must be >= 1");
  return BlockPool(num_blocks, block_size);
}

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size)
    : block_size_(block_size),
      blocks_(num_blocks),
      stored_tokens_(static_cast<size_t>(num_blocks) * block_size) {
  free_.reserve(num_blocks);
  // Highest id at the bottom of the stack, so allocation hands out 0, 1, 2, ... first.
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
  index_.reserve(num_blocks);
}

int32_t BlockPool::Allocate() {
  int32_t block = kNoBlock;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else if (lru_head_ != kNoBlock) {
    block = lru_head_;
    LruRemove(block);
    DropHash(block);
    ++num_evictions_;
  } else {
    return kNoBlock;
  }
  assert(blocks_[block].ref_count == 0);
  blocks_[block].ref_count = 1;
  return block;
}

void BlockPool::Acquire(int32_t block) {
  Block& b = blocks_[block];
  if (b.ref_count == 0) {
    assert(b.hashed && "only in-use or cached blocks can be acquired");
    LruRemove(block);
  }
  ++b.ref_count;
}

void BlockPool::Release(int32_t block) {
  Block& b = blocks_[block];
  assert(b.ref_count > 0);
  if (--b.ref_count > 0) return;
  if (b.hashed) {
    LruPushBack(block);
  } else {
    free_.push_back(block);
  }
}

int32_t BlockPool::Lookup(const BlockHash& hash, absl::Span<const int32_t> tokens) const {
  auto it = index_.find(hash);
  if (it == index_.end()) return kNoBlock;
  if (tokens.size() != static_cast<size_t>(block_size_)) return kNoBlock;
  if (!std::equal(tokens.begin(), tokens.end(), StoredTokens(it->second).begin())) return kNoBlock;
  return it->second;
}

bool BlockPool::Register(int32_t block, const BlockHash& hash, absl::Span<const int32_t> tokens) {
  Block& b = blocks_[block];
  assert(b.ref_count > 0 && tokens.size() == static_cast<size_t>(block_size_));
  if (b.hashed) return false;
  if (!index_.try_emplace(hash, block).second) return false;
  b.hashed = true;
  b.hash = hash;
  std::copy(tokens.begin(), tokens.end(),
            stored_tokens_.begin() + static_cast<size_t>(block) * block_size_);
  return true;
}

absl::Span<const int32_t> BlockPool::StoredTokens(int32_t block) const {
  return absl::MakeConstSpan(stored_tokens_)
      .subspan(static_cast<size_t>(block) * block_size_, block_size_);
}

void BlockPool::LruPushBack(int32_t block) {
  Block& b = blocks_[block];
  b.lru_prev = lru_tail_;
  b.lru_next = kNoBlock;
  if (lru_tail_ != kNoBlock) {
    blocks_[lru_tail_].lru_next = block;
  } else {
    lru_head_ = block;
  }
  lru_tail_ = block;
  ++num_cached_;
}

void BlockPool::LruRemove(int32_t block) {
  Block& b = blocks_[block];
  if (b.lru_prev != kNoBlock) {
    blocks_[b.lru_prev].lru_next = b.lru_next;
  } else {
    lru_head_ = b.lru_next;
  }
  if (b.lru_next != kNoBlock) {
    blocks_[b.lru_next].lru_prev = b.lru_prev;
  } else {
    lru_tail_ = b.lru_prev;
  }
  b.lru_prev = b.lru_next = kNoBlock;
  --num_cached_;
}

void BlockPool::DropHash(int32_t block) {
  Block& b = blocks_[block];
  assert(b.hashed);
  const size_t erased = index_.erase(b.hash);
  assert(erased == 1);
  (void)erased;
  b.hashed = false;
}

absl::Status BlockPool::CheckLists(int32_t* num_listed) const {
  std::vector<uint8_t> seen(blocks_.size(), 0);
  for (int32_t block : free_) {
    if (block < 0 || block >= num_blocks() || seen[block]) {
      return absl::InternalError(
          absl::StrFormat("free list holds bad or repeated block %d", block));
    }
    seen[block] = 1;
    if (blocks_[block].ref_count != 0 || blocks_[block].hashed) {
      return absl::InternalError(absl::StrFormat("free block %d has ref_count %d, hashed %d", block,
                                                 blocks_[block].ref_count, blocks_[block].hashed));
    }
  }
  int32_t cached = 0;
  int32_t prev = kNoBlock;
  for (int32_t block = lru_head_; block != kNoBlock; block = blocks_[block].lru_next) {
    if (block < 0 || block >= num_blocks() || seen[block] || blocks_[block].lru_prev != prev) {
      return absl::InternalError(absl::StrFormat("cached list is corrupt at block %d", block));
    }
    seen[block] = 1;
    if (blocks_[block].ref_count != 0 || !blocks_[block].hashed) {
      return absl::InternalError(absl::StrFormat("cached block %d has ref_count %d, hashed %d",
                                                 block, blocks_[block].ref_count,
                                                 blocks_[block].hashed));
    }
    prev = block;
    ++cached;
  }
  if (prev != lru_tail_ || cached != num_cached_) {
    return absl::InternalError(
        absl::StrFormat("cached list has %d blocks, counter says %d", cached, num_cached_));
  }
  *num_listed = num_free() + cached;
  return absl::OkStatus();
}

absl::Status BlockPool::CheckIndex() const {
  size_t num_hashed = 0;
  for (const Block& b : blocks_) num_hashed += b.hashed ? 1 : 0;
  if (num_hashed != index_.size()) {
    return absl::InternalError(
        absl::StrFormat("%d hashed blocks but %d index entries", num_hashed, index_.size()));
  }
  for (const auto& [hash, block] : index_) {
    if (block < 0 || block >= num_blocks() || !blocks_[block].hashed ||
        !(blocks_[block].hash == hash)) {
      return absl::InternalError(absl::StrFormat("index entry for block %d disagrees", block));
    }
  }
  return absl::OkStatus();
}

absl::Status BlockPool::CheckIntegrity(absl::Span<const int32_t> expected_ref_counts) const {
  if (expected_ref_counts.size() != blocks_.size()) {
    return absl::InternalError("expected_ref_counts has the wrong size");
  }
  int32_t num_listed = 0;
  if (absl::Status s = CheckLists(&num_listed); !s.ok()) return s;
  int32_t in_use = 0;
  for (int32_t b = 0; b < num_blocks(); ++b) {
    if (blocks_[b].ref_count != expected_ref_counts[b]) {
      return absl::InternalError(absl::StrFormat("block %d has ref_count %d but %d references", b,
                                                 blocks_[b].ref_count, expected_ref_counts[b]));
    }
    in_use += blocks_[b].ref_count > 0 ? 1 : 0;
  }
  if (num_listed + in_use != num_blocks()) {
    return absl::InternalError(absl::StrFormat("free %d + cached %d + in use %d != total %d",
                                               num_free(), num_cached_, in_use, num_blocks()));
  }
  return CheckIndex();
}

}  // namespace r2::cache
