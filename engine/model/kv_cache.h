#pragma once
// PagedKvCache: the storage of the MLA latent cache, a pool of fixed-size blocks. Only storage and
// addressing live here; which sequence owns which block (free lists, prefix sharing, refcounts) is
// the cache allocator's business (engine/cache), and tests assign blocks by hand.
//
// Layout: [num_blocks][num_layers][block_size][row], row = [normalized latent (kv_lora_rank);
// roped key (qk_rope_head_dim)] = 576 values for V3, stored in the shape's dtype
// (kernels/kv_cache_format.h: 2304 bytes a row in float32, 1152 in bf16, 656 in fp8). A block holds
// the same block_size token positions for every layer (MTP layers included, after the main layers),
// so one block id in a sequence's block table addresses those positions in the whole model, and
// moving or freeing a block touches one contiguous range. Token position p of a sequence lives in
// block block_table[p / block_size] at offset p % block_size; its slot is block * block_size +
// offset.
//
// The storage lives in a Backend's memory (the one the model runs on); without a backend it is
// plain host memory. Not thread-safe: the engine step loop is the only writer (through
// DeepseekModel::Forward).
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/backend_buffer.h"
#include "engine/model/config.h"
#include "kernels/backend.h"

namespace r2::model {

struct KvCacheShape {
  int64_t num_blocks = 0;
  int64_t num_layers = 0;    // main layers + MTP layers
  int64_t block_size = 64;   // tokens per block
  int64_t kv_lora_rank = 0;  // latent width
  int64_t rope_dim = 0;      // rope key width
  KvCacheDType dtype = KvCacheDType::kFloat32;
  int64_t row_width() const { return kv_lora_rank + rope_dim; }  // values
  int64_t row_bytes() const { return KvCacheRowBytes(dtype, kv_lora_rank, rope_dim); }
  int64_t row_words() const { return row_bytes() / 4; }  // 4-byte words (PagedLatentCache units)
};

class PagedKvCache {
 public:
  // Zero-filled storage from `backend` (host memory when null; the backend must outlive the
  // cache); InvalidArgument for non-positive sizes or a size that overflows, ResourceExhausted
  // when the backend has no room.
  static absl::StatusOr<std::unique_ptr<PagedKvCache>> Create(const KvCacheShape& shape,
                                                              Backend* backend = nullptr);
  // Bytes of storage a cache of `shape` takes (0 when the shape is invalid).
  static int64_t StorageBytes(const KvCacheShape& shape);
  // The shape a model with `config` needs: every main layer plus its MTP layers.
  static KvCacheShape ShapeFor(const ModelConfig& config, int64_t num_blocks,
                               int64_t block_size = 64,
                               KvCacheDType dtype = KvCacheDType::kFloat32);

  const KvCacheShape& shape() const { return shape_; }
  // The backend whose memory holds the storage (null: plain host memory).
  Backend* backend() const { return backend_; }
  int64_t num_blocks() const { return shape_.num_blocks; }
  int64_t block_size() const { return shape_.block_size; }
  // 4-byte words from one block to the next (elements for a float32 cache).
  int64_t block_stride() const {
    return shape_.num_layers * shape_.block_size * shape_.row_words();
  }
  // The kernels' view of one layer (layer < num_layers, checked by the caller).
  PagedLatentCache Layer(int64_t layer);
  // A copy of the row of `layer` at `slot` (slot = block * block_size + offset) decoded to
  // float32, for tests and debugging (read back from the backend; empty if that copy fails).
  std::vector<float> Row(int64_t layer, int64_t slot) const;
  // Copies every layer's rows of block `src` into block `dst` (copy-on-write of a shared block)
  // with one backend copy; InvalidArgument when either is outside the pool.
  absl::Status CopyBlock(int64_t src, int64_t dst);
  // Blocks needed to hold `tokens` positions.
  int64_t BlocksFor(int64_t tokens) const {
    return (tokens + shape_.block_size - 1) / shape_.block_size;
  }

 private:
  explicit PagedKvCache(const KvCacheShape& shape) : shape_(shape) {}
  KvCacheShape shape_;
  Backend* backend_ = nullptr;  // null: host_ holds the storage
  std::vector<float> host_;     // 4-byte words
  BackendBuffer device_;
  float* data_ = nullptr;
};

}  // namespace r2::model
