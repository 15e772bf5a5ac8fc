// MakeCheckedMemoryBackend(): the reference ops behind a memory space of their own. It stands in
// for a device backend on machines without one: host_memory() is false, so the model uploads its
// weights, plans and KV cache through the copy API, and every op first checks that each range
// it will touch (activations, index arrays, weight and table data, scales, the cache) lies inside
// one live allocation of this backend. A pointer into host memory the model forgot to upload is
// an InvalidArgument "<op>: <field> is not backend memory", not a silent success that would be a
// fault on a GPU. Fresh allocations are filled with NaN bytes so reads of never-written memory
// show up in the results.
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <string>
#include <utility>

#include "kernels/backend.h"
#include "kernels/cpu/reference_ops.h"

// Returns from the calling function when a check fails.
#define R2_CHECKED(expr)                               \
  do {                                                 \
    if (absl::Status _s = (expr); !_s.ok()) return _s; \
  } while (0)

namespace r2 {
namespace {

// The pretend device's capacity: QueryMemory() reports it minus what is allocated, so code that
// sizes the KV pool from free device memory gets a bounded, machine-independent answer.
constexpr int64_t kCapacityBytes = int64_t{1} << 30;

// Elements spanned by `rows` rows of `width` values `stride` apart (0 rows: nothing).
int64_t Span2(int64_t rows, int64_t stride, int64_t width) {
  return rows <= 0 ? 0 : (rows - 1) * stride + width;
}

// ... plus `heads` heads `head_stride` apart within each row.
int64_t Span3(int64_t rows, int64_t token_stride, int64_t heads, int64_t head_stride,
              int64_t width) {
  return rows <= 0 || heads <= 0 ? 0
                                 : (rows - 1) * token_stride + (heads - 1) * head_stride + width;
}

class CheckedMemoryBackend final : public Backend {
 public:
  ~CheckedMemoryBackend() override {
    for (const auto& [start, bytes] : live_) Backend::Free(reinterpret_cast<void*>(start));
  }

  std::string_view name() const override { return "checked-memory"; }
  bool host_memory() const override { return false; }

  absl::StatusOr<void*> Allocate(size_t bytes) override {
    if (static_cast<int64_t>(bytes) > kCapacityBytes - allocated_) {
      return absl::ResourceExhaustedError(absl::StrCat("checked-memory: cannot allocate ", bytes,
                                                       " bytes (", kCapacityBytes - allocated_,
                                                       " of ", kCapacityBytes, " free)"));
    }
    absl::StatusOr<void*> ptr = Backend::Allocate(bytes);
    if (!ptr.ok()) return ptr;
    std::memset(*ptr, 0xff, bytes);  // 0xffffffff is a float NaN
    live_[reinterpret_cast<uintptr_t>(*ptr)] = bytes;
    allocated_ += static_cast<int64_t>(bytes);
    return ptr;
  }

  void Free(void* ptr) override {
    if (ptr == nullptr) return;
    auto it = live_.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == live_.end()) return;  // not ours (or freed twice): never hand it to free()
    allocated_ -= static_cast<int64_t>(it->second);
    live_.erase(it);
    Backend::Free(ptr);
  }

  absl::Status CopyToBackend(void* dst, const void* host_src, size_t bytes) override {
    R2_CHECKED(Inside("CopyToBackend", "dst", dst, bytes));
    return Backend::CopyToBackend(dst, host_src, bytes);
  }
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) override {
    R2_CHECKED(Inside("CopyToHost", "src", src, bytes));
    return Backend::CopyToHost(host_dst, src, bytes);
  }
  absl::Status CopyWithin(void* dst, const void* src, size_t bytes) override {
    R2_CHECKED(Inside("CopyWithin", "dst", dst, bytes));
    R2_CHECKED(Inside("CopyWithin", "src", src, bytes));
    return Backend::CopyWithin(dst, src, bytes);
  }
  absl::Status Zero(void* dst, size_t bytes) override {
    R2_CHECKED(Inside("Zero", "dst", dst, bytes));
    return Backend::Zero(dst, bytes);
  }
  absl::StatusOr<MemoryInfo> QueryMemory() override {
    return MemoryInfo{.free_bytes = kCapacityBytes - allocated_, .total_bytes = kCapacityBytes};
  }

  absl::Status Embedding(const EmbeddingParams& p) override {
    const std::string op = "Embedding";
    R2_CHECKED(Tensor(op, "table", p.table));
    R2_CHECKED(Floats(op, "ids", p.ids, p.rows, sizeof(int32_t)));
    if (p.table.shape.size() == 2) {
      const int64_t dim = p.table.dim(1);
      R2_CHECKED(Floats(op, "out", p.out, Span2(p.rows, cpu::Stride(p.out_stride, dim), dim)));
    }
    return cpu::Embedding(p);
  }

  absl::Status RmsNorm(const RmsNormParams& p) override {
    const std::string op = "RmsNorm";
    R2_CHECKED(Floats(op, "x", p.x, Span2(p.rows, cpu::Stride(p.x_stride, p.dim), p.dim)));
    R2_CHECKED(Floats(op, "y", p.y, Span2(p.rows, cpu::Stride(p.y_stride, p.dim), p.dim)));
    R2_CHECKED(Tensor(op, "weight", p.weight));
    return cpu::RmsNorm(p);
  }

  absl::Status Linear(const LinearParams& p) override {
    const std::string op = "Linear";
    if (p.weight_transposed) {  // a device backend's layout: as the CUDA backend, refused
      return absl::UnimplementedError(
          "Linear: transposed weights (LinearParams::weight_transposed) are not supported on "
          "checked-memory");
    }
    const WeightView& w = p.weight;
    if (w.weight.shape.size() == 2 && p.batch >= 1) {
      const int64_t in = w.in_features(), out = w.out_features();
      const int64_t x_span = Span2(p.rows, cpu::Stride(p.x_stride, in), in);
      const int64_t y_span = Span2(p.rows, cpu::Stride(p.y_stride, out), out);
      R2_CHECKED(Floats(op, "x", p.x, x_span == 0 ? 0 : (p.batch - 1) * p.x_batch_stride + x_span));
      R2_CHECKED(Floats(op, "y", p.y, y_span == 0 ? 0 : (p.batch - 1) * p.y_batch_stride + y_span));
      const int64_t w_bytes =
          (p.batch - 1) * p.weight_batch_stride * static_cast<int64_t>(DTypeSize(w.weight.dtype)) +
          Bytes(w.weight);
      R2_CHECKED(Inside(op, "weight", w.weight.data, w_bytes));
    } else {
      R2_CHECKED(Tensor(op, "weight", w.weight));
    }
    if (w.block_scaled()) R2_CHECKED(Tensor(op, "scale_inv", w.scale_inv));
    if (!w.scale.empty()) R2_CHECKED(Tensor(op, "scale", w.scale));
    if (!w.zero_point.empty()) R2_CHECKED(Tensor(op, "zero_point", w.zero_point));
    return cpu::Linear(p);
  }

  absl::Status Rope(const RopeParams& p) override {
    const std::string op = "Rope";
    R2_CHECKED(
        Floats(op, "x", p.x, Span3(p.rows, p.token_stride, p.heads, p.head_stride, p.rope_dim)));
    R2_CHECKED(Floats(op, "positions", p.positions, p.rows, sizeof(int32_t)));
    const int64_t table = p.rows > 0 ? p.max_positions * (p.rope_dim / 2) : 0;
    R2_CHECKED(Floats(op, "cos", p.cos, table));
    R2_CHECKED(Floats(op, "sin", p.sin, table));
    return cpu::Rope(p);
  }

  absl::Status SiluMul(const SiluMulParams& p) override {
    const std::string op = "SiluMul";
    R2_CHECKED(Floats(op, "gate", p.gate, Span2(p.rows, cpu::Stride(p.gate_stride, p.dim), p.dim)));
    R2_CHECKED(Floats(op, "up", p.up, Span2(p.rows, cpu::Stride(p.up_stride, p.dim), p.dim)));
    R2_CHECKED(Floats(op, "out", p.out, Span2(p.rows, cpu::Stride(p.out_stride, p.dim), p.dim)));
    return cpu::SiluMul(p);
  }

  absl::Status Add(const AddParams& p) override {
    const std::string op = "Add";
    R2_CHECKED(Floats(op, "a", p.a, Span2(p.rows, cpu::Stride(p.a_stride, p.dim), p.dim)));
    R2_CHECKED(Floats(op, "b", p.b, Span2(p.rows, cpu::Stride(p.b_stride, p.dim), p.dim)));
    R2_CHECKED(Floats(op, "out", p.out, Span2(p.rows, cpu::Stride(p.out_stride, p.dim), p.dim)));
    return cpu::Add(p);
  }

  absl::Status GatherRows(const GatherRowsParams& p) override {
    const std::string op = "GatherRows";
    const int64_t x_rows = p.rows > 0 ? (p.index ? p.x_rows : p.rows) : 0;
    R2_CHECKED(Floats(op, "x", p.x, Span2(x_rows, cpu::Stride(p.x_stride, p.dim), p.dim)));
    if (p.index != nullptr) R2_CHECKED(Floats(op, "index", p.index, p.rows, sizeof(int32_t)));
    R2_CHECKED(Floats(op, "out", p.out, Span2(p.rows, cpu::Stride(p.out_stride, p.dim), p.dim)));
    return cpu::GatherRows(p);
  }

  absl::Status ScatterAddRows(const ScatterAddRowsParams& p) override {
    const std::string op = "ScatterAddRows";
    R2_CHECKED(Floats(op, "x", p.x, Span2(p.rows, cpu::Stride(p.x_stride, p.dim), p.dim)));
    R2_CHECKED(Floats(op, "index", p.index, p.rows, sizeof(int32_t)));
    if (p.scale != nullptr) R2_CHECKED(Floats(op, "scale", p.scale, p.rows));
    const int64_t out_rows = p.rows > 0 ? p.out_rows : 0;
    R2_CHECKED(Floats(op, "out", p.out, Span2(out_rows, cpu::Stride(p.out_stride, p.dim), p.dim)));
    return cpu::ScatterAddRows(p);
  }

  absl::Status MoeRoute(const MoeRouteParams& p) override {
    const std::string op = "MoeRoute";
    R2_CHECKED(Floats(op, "logits", p.logits,
                      Span2(p.rows, cpu::Stride(p.logits_stride, p.num_experts), p.num_experts)));
    if (p.bias != nullptr) R2_CHECKED(Floats(op, "bias", p.bias, p.num_experts));
    R2_CHECKED(Floats(op, "expert_ids", p.expert_ids, p.rows * p.top_k, sizeof(int32_t)));
    R2_CHECKED(Floats(op, "expert_weights", p.expert_weights, p.rows * p.top_k));
    return cpu::MoeRoute(p);
  }

  absl::Status MlaPrefillAttention(const MlaPrefillParams& p) override {
    const std::string op = "MlaPrefillAttention";
    if (p.num_seqs <= 0) return cpu::MlaPrefillAttention(p);
    R2_CHECKED(Floats(op, "cu_seqlens_q", p.cu_seqlens_q, p.num_seqs + 1, sizeof(int32_t)));
    R2_CHECKED(Floats(op, "cu_seqlens_k", p.cu_seqlens_k, p.num_seqs + 1, sizeof(int32_t)));
    const int64_t nq = p.cu_seqlens_q[p.num_seqs], nk = p.cu_seqlens_k[p.num_seqs];
    const int64_t h = p.heads;
    R2_CHECKED(Floats(op, "q", p.q,
                      Span3(nq, p.q_token_stride, h, p.q_head_stride, p.nope_dim + p.rope_dim)));
    R2_CHECKED(Floats(op, "k_nope", p.k_nope,
                      Span3(nk, p.k_nope_token_stride, h, p.k_nope_head_stride, p.nope_dim)));
    R2_CHECKED(Floats(op, "k_pe", p.k_pe, Span2(nk, p.k_pe_token_stride, p.rope_dim)));
    R2_CHECKED(Floats(op, "v", p.v, Span3(nk, p.v_token_stride, h, p.v_head_stride, p.v_dim)));
    R2_CHECKED(
        Floats(op, "out", p.out, Span3(nq, p.out_token_stride, h, p.out_head_stride, p.v_dim)));
    return cpu::MlaPrefillAttention(p);
  }

  absl::Status KvCacheWrite(const KvCacheWriteParams& p) override {
    const std::string op = "KvCacheWrite";
    const PagedLatentCache& c = p.cache;
    R2_CHECKED(Floats(op, "latent", p.latent, Span2(p.rows, p.latent_stride, c.kv_lora_rank)));
    R2_CHECKED(Floats(op, "k_pe", p.k_pe, Span2(p.rows, p.k_pe_stride, c.rope_dim)));
    R2_CHECKED(Floats(op, "slot_mapping", p.slot_mapping, p.rows, sizeof(int64_t)));
    if (p.rows > 0) R2_CHECKED(Cache(op, c));
    return cpu::KvCacheWrite(p);
  }

  absl::Status MlaDecodeAttention(const MlaDecodeParams& p) override {
    const std::string op = "MlaDecodeAttention";
    if (p.num_seqs <= 0) return cpu::MlaDecodeAttention(p);
    const PagedLatentCache& c = p.cache;
    R2_CHECKED(Floats(op, "cu_seqlens_q", p.cu_seqlens_q, p.num_seqs + 1, sizeof(int32_t)));
    R2_CHECKED(Floats(op, "kv_lens", p.kv_lens, p.num_seqs, sizeof(int32_t)));
    R2_CHECKED(Floats(op, "block_tables", p.block_tables, p.num_seqs * p.block_table_stride,
                      sizeof(int32_t)));
    R2_CHECKED(Cache(op, c));
    const int64_t nq = p.cu_seqlens_q[p.num_seqs];
    R2_CHECKED(
        Floats(op, "q", p.q, Span3(nq, p.q_token_stride, p.heads, p.q_head_stride, c.row_width())));
    R2_CHECKED(Floats(op, "out", p.out,
                      Span3(nq, p.out_token_stride, p.heads, p.out_head_stride, c.kv_lora_rank)));
    return cpu::MlaDecodeAttention(p);
  }

  // Checks the arrays, then every pointer of the experts the ids select (the pointer tables are
  // backend memory, readable here because this backend's memory is host memory).
  absl::Status MoeExperts(const MoeExpertsParams& p) override {
    const std::string op = "MoeExperts";
    R2_CHECKED(cpu::CheckMoeExperts(p));
    if (p.rows == 0) return absl::OkStatus();
    const int64_t d = p.hidden, pairs = p.rows * p.top_k, e_count = p.num_experts;
    R2_CHECKED(Floats(op, "x", p.x, Span2(p.rows, cpu::Stride(p.x_stride, d), d)));
    R2_CHECKED(Floats(op, "h", p.h, Span2(p.rows, cpu::Stride(p.h_stride, d), d)));
    R2_CHECKED(Floats(op, "expert_ids", p.expert_ids, pairs, sizeof(int32_t)));
    R2_CHECKED(Floats(op, "expert_weights", p.expert_weights, pairs));
    const bool fp8 = p.dtype == DType::kF8E4M3;
    const std::pair<const char*, const void* const*> tables[] = {
        {"gate", p.gate},
        {"up", p.up},
        {"down", p.down},
        {"gate_scale_inv", fp8 ? reinterpret_cast<const void* const*>(p.gate_scale_inv) : nullptr},
        {"up_scale_inv", fp8 ? reinterpret_cast<const void* const*>(p.up_scale_inv) : nullptr},
        {"down_scale_inv", fp8 ? reinterpret_cast<const void* const*>(p.down_scale_inv) : nullptr}};
    for (const auto& [name, table] : tables) {
      if (table != nullptr) R2_CHECKED(Floats(op, name, table, e_count, sizeof(void*)));
    }
    const int64_t elem = fp8 ? 1 : static_cast<int64_t>(DTypeSize(p.dtype));
    const int64_t w_bytes = p.width * d * elem;
    auto scale_bytes = [&](int64_t out, int64_t in) {
      return ((out + p.block_out - 1) / p.block_out) * ((in + p.block_in - 1) / p.block_in) *
             static_cast<int64_t>(sizeof(float));
    };
    for (int64_t i = 0; i < pairs; ++i) {
      const int32_t e = p.expert_ids[i];
      if (e < 0 || e >= e_count) break;  // the reference names the bad id
      R2_CHECKED(Inside(op, "gate[expert]", p.gate[e], w_bytes));
      R2_CHECKED(Inside(op, "up[expert]", p.up[e], w_bytes));
      R2_CHECKED(Inside(op, "down[expert]", p.down[e], w_bytes));
      if (fp8) {
        R2_CHECKED(
            Inside(op, "gate_scale_inv[expert]", p.gate_scale_inv[e], scale_bytes(p.width, d)));
        R2_CHECKED(Inside(op, "up_scale_inv[expert]", p.up_scale_inv[e], scale_bytes(p.width, d)));
        R2_CHECKED(
            Inside(op, "down_scale_inv[expert]", p.down_scale_inv[e], scale_bytes(d, p.width)));
      }
    }
    return cpu::MoeExperts(p);
  }

 private:
  // [ptr, ptr + bytes) inside one live allocation; nothing to check for an empty range.
  absl::Status Inside(const std::string& op, const std::string& field, const void* ptr,
                      int64_t bytes) const {
    if (bytes <= 0) return absl::OkStatus();
    const auto at = reinterpret_cast<uintptr_t>(ptr);
    auto it = live_.upper_bound(at);
    if (ptr != nullptr && it != live_.begin()) {
      --it;
      if (at >= it->first && at - it->first + static_cast<uint64_t>(bytes) <= it->second) {
        return absl::OkStatus();
      }
    }
    return cpu::Invalid(op, field + " is not backend memory");
  }
  // `count` elements of `elem_bytes` (float by default) at ptr.
  absl::Status Floats(const std::string& op, const std::string& field, const void* ptr,
                      int64_t count, size_t elem_bytes = sizeof(float)) const {
    return Inside(op, field, ptr, count * static_cast<int64_t>(elem_bytes));
  }
  absl::Status Tensor(const std::string& op, const std::string& field, const TensorView& t) const {
    return Inside(op, field + " data", t.data, Bytes(t));
  }
  // Bytes a tensor's data spans (packed U4 rows start on 32-bit words).
  static int64_t Bytes(const TensorView& t) {
    if (t.dtype == DType::kU4) {
      if (t.shape.empty()) return 0;
      return t.numel() / t.shape.back() * PackedU4RowBytes(t.shape.back());
    }
    return t.numel() * static_cast<int64_t>(DTypeSize(t.dtype));
  }
  absl::Status Cache(const std::string& op, const PagedLatentCache& c) const {
    const int64_t span = Span2(c.num_blocks, c.block_stride, c.block_size * c.row_words());
    return Floats(op, "cache", c.data, span);
  }

  std::map<uintptr_t, size_t> live_;  // start -> bytes
  int64_t allocated_ = 0;
};

}  // namespace

std::unique_ptr<Backend> MakeCheckedMemoryBackend() {
  return std::make_unique<CheckedMemoryBackend>();
}

}  // namespace r2
