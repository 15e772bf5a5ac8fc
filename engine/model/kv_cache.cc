#include "engine/model/kv_cache.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace r2::model {

namespace {

// 4-byte words of a cache of `shape`, or an error for bad or overflowing sizes.
absl::StatusOr<int64_t> StorageWords(const KvCacheShape& shape) {
  if (shape.num_blocks <= 0 || shape.num_layers <= 0 || shape.block_size <= 0 ||
      shape.kv_lora_rank <= 0 || shape.rope_dim < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PagedKvCache: sizes must be positive (num_blocks ", shape.num_blocks, ", num_layers ",
        shape.num_layers, ", block_size ", shape.block_size, ", row ", shape.row_width(), ")"));
  }
  const int64_t limit = std::numeric_limits<int64_t>::max() / 4;
  int64_t elements = shape.num_blocks;
  for (int64_t factor : {shape.num_layers, shape.block_size, shape.row_words()}) {
    if (elements > limit / factor) return absl::InvalidArgumentError("PagedKvCache: too large");
    elements *= factor;
  }
  return elements;
}

}  // namespace

int64_t PagedKvCache::StorageBytes(const KvCacheShape& shape) {
  absl::StatusOr<int64_t> words = StorageWords(shape);
  return words.ok() ? *words * 4 : 0;
}

absl::StatusOr<std::unique_ptr<PagedKvCache>> PagedKvCache::Create(const KvCacheShape& shape,
                                                                   Backend* backend) {
  absl::StatusOr<int64_t> elements = StorageWords(shape);
  if (!elements.ok()) return elements.status();
  std::unique_ptr<PagedKvCache> cache(new PagedKvCache(shape));
  const size_t bytes = static_cast<size_t>(*elements) * sizeof(float);
  if (backend == nullptr) {
    cache->host_.assign(static_cast<size_t>(*elements), 0.0f);
    cache->data_ = cache->host_.data();
    return cache;
  }
  if (absl::Status s = cache->device_.Reserve(backend, bytes); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("PagedKvCache: ", s.message()));
  }
  if (absl::Status s = backend->Zero(cache->device_.data(), bytes); !s.ok()) return s;
  cache->backend_ = backend;
  cache->data_ = cache->device_.as<float>();
  return cache;
}

KvCacheShape PagedKvCache::ShapeFor(const ModelConfig& config, int64_t num_blocks,
                                    int64_t block_size, KvCacheDType dtype) {
  return KvCacheShape{.num_blocks = num_blocks,
                      .num_layers = config.num_hidden_layers + config.num_nextn_predict_layers,
                      .block_size = block_size,
                      .kv_lora_rank = config.kv_lora_rank,
                      .rope_dim = config.qk_rope_head_dim,
                      .dtype = dtype};
}

PagedLatentCache PagedKvCache::Layer(int64_t layer) {
  return PagedLatentCache{.data = data_ + layer * shape_.block_size * shape_.row_words(),
                          .num_blocks = shape_.num_blocks,
                          .block_size = shape_.block_size,
                          .block_stride = block_stride(),
                          .kv_lora_rank = shape_.kv_lora_rank,
                          .rope_dim = shape_.rope_dim,
                          .dtype = shape_.dtype};
}

absl::Status PagedKvCache::CopyBlock(int64_t src, int64_t dst) {
  if (src < 0 || src >= shape_.num_blocks || dst < 0 || dst >= shape_.num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("PagedKvCache::CopyBlock: block ", src, " -> ",
                                                   dst, " outside [0, ", shape_.num_blocks, ")"));
  }
  const int64_t stride = block_stride();
  if (backend_ == nullptr) {
    std::copy_n(data_ + src * stride, stride, data_ + dst * stride);
    return absl::OkStatus();
  }
  return backend_->CopyWithin(data_ + dst * stride, data_ + src * stride, stride * sizeof(float));
}

std::vector<float> PagedKvCache::Row(int64_t layer, int64_t slot) const {
  const int64_t block = slot / shape_.block_size, offset = slot % shape_.block_size;
  const int64_t words = shape_.row_words();
  const float* row = data_ + block * block_stride() + (layer * shape_.block_size + offset) * words;
  std::vector<float> stored(row, row + (backend_ == nullptr ? words : 0));
  if (backend_ != nullptr) {
    stored.resize(words);
    if (!backend_->CopyToHost(stored.data(), row, words * sizeof(float)).ok()) return {};
  }
  std::vector<float> out(shape_.row_width());
  DecodeKvCacheRow(shape_.dtype, shape_.kv_lora_rank, shape_.rope_dim, stored.data(), out.data());
  return out;
}

}  // namespace r2::model
