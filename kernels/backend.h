#pragma once
// The Backend interface: every numeric operation the DeepSeek forward pass runs, one plain params
// struct per op family. Kernels see pointers, sizes and strides, never sequences or requests; the
// caller (engine/model) plans the per-step metadata (positions, cu_seqlens, block tables, slot
// mappings) once per step and hands the same arrays to every layer.
//
// Conventions shared by every op:
//  - Activations are float32. Strides are in elements (not bytes) and let an op read or write a
//    column slice of a wider row (e.g. q_pe inside q). A stride of 0 means "packed" (the row
//    width).
//  - Pointers live in the backend's memory space (host memory for the CPU backend).
//  - Every op validates its arguments on the host before running and returns InvalidArgument for
//    shapes, dtypes or indices it cannot handle (a bad token id, a slot past the cache); it never
//    aborts. Each op accumulates in float32.
//  - Ops are synchronous from the caller's point of view; a Backend is used by one thread at a
//  time.
//
// Usage (the model's MLP on n rows of x, hidden width D, intermediate width I):
//   backend.Linear({.x = x, .rows = n, .weight = gate, .y = gu, .y_stride = 2 * I});
//   backend.Linear({.x = x, .rows = n, .weight = up, .y = gu + I, .y_stride = 2 * I});
//   backend.SiluMul({.gate = gu, .gate_stride = 2 * I, .up = gu + I, .up_stride = 2 * I,
//                    .out = act, .rows = n, .dim = I});
//   backend.Linear({.x = act, .rows = n, .weight = down, .y = h, .accumulate = true});
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/kv_cache_format.h"
#include "kernels/sample_rows.h"
#include "kernels/tensor.h"

namespace r2 {

// out[i, :] = float(table[ids[i], :]).
struct EmbeddingParams {
  TensorView table;              // [vocab, dim], BF16/F16/F32
  const int32_t* ids = nullptr;  // [rows]; each in [0, vocab)
  int64_t rows = 0;
  float* out = nullptr;    // [rows, out_stride]
  int64_t out_stride = 0;  // 0: dim
};

// y[i, :] = weight * x[i, :] / sqrt(mean(x[i, :]^2) + eps). In place (x == y) is allowed.
struct RmsNormParams {
  const float* x = nullptr;  // [rows, x_stride]
  int64_t x_stride = 0;      // 0: dim
  float* y = nullptr;        // [rows, y_stride]
  int64_t y_stride = 0;      // 0: dim
  int64_t rows = 0;
  int64_t dim = 0;
  TensorView weight;  // [dim], BF16/F16/F32
  float eps = 1e-6f;
};

// y[i, o] (+)= sum_j x[i, j] * W[o, j] for a bias-free linear layer W [out, in]. W may be BF16,
// F16, F32, or F8_E4M3 with block scales (dequantized on the fly, never copied to float32).
struct LinearParams {
  const float* x = nullptr;  // [rows, x_stride], in_features values used per row
  int64_t x_stride = 0;      // 0: in_features
  int64_t rows = 0;
  WeightView weight;        // [out_features, in_features]
  float* y = nullptr;       // [rows, y_stride], out_features values written per row
  int64_t y_stride = 0;     // 0: out_features
  bool accumulate = false;  // y += x W^T instead of y = x W^T (residual adds)
  // Strided batch of `batch` independent products with the same shapes (per-head projections):
  // product b reads rows of x + b * x_batch_stride and the weight whose data starts
  // weight_batch_stride elements after the view's (BF16/F16/F32 weights only; the view's shape
  // is one product's), and writes y + b * y_batch_stride. Strides are in elements.
  int64_t batch = 1;
  int64_t x_batch_stride = 0;
  int64_t y_batch_stride = 0;
  int64_t weight_batch_stride = 0;
  // The weight's elements stored transposed: element (o, j) of the [out_features, in_features]
  // view is at data[j * out_features + o] (after the batch offset); the view's shape is unchanged.
  // BF16/F16/F32 weights only, on backends whose SupportsTransposedLinear() is true (the others
  // refuse it). The per-head absorbed products read their weights in this layout on the CPU: a
  // product with few inputs is then a sum of broadcast rows, not one short dot per output.
  bool weight_transposed = false;
};

// Several Linears on the same rows of x as one op (Backend::LinearGroup): the model's query and
// latent projections (q_a or q_proj, and kv_a), a dense MLP's gate and up. Every product has the
// same x, x_stride and rows, batch 1 and no weight_transposed (InvalidArgument naming the product
// and field otherwise, from CheckLinearGroup); weights, y, y_stride and accumulate are each
// product's own, and no product's y may overlap x or another's y. The result is Linear's on each
// product in order. The default runs exactly that; the optimized CPU backend prepares the rows
// once (AMX tiles, bf16 pairs) and spreads every product's outputs over one parallel loop.
//   const LinearParams qkv[] = {{.x = x, .rows = n, .weight = q_a, .y = cq},
//                               {.x = x, .rows = n, .weight = kv_a, .y = kv}};
//   backend.LinearGroup(qkv);
absl::Status CheckLinearGroup(std::span<const LinearParams> products);

// Rotates interleaved pairs of x in place: for each row t, head h and pair i < rope_dim/2, with
// a = (x[2i], x[2i+1]), c = cos[pos[t], i], s = sin[pos[t], i]:
//   x[2i] = a0 c - a1 s,  x[2i+1] = a0 s + a1 c.
// The cos/sin tables carry any frequency correction (YaRN) and attention factor (see RopeTable).
struct RopeParams {
  float* x = nullptr;  // x[t * token_stride + h * head_stride + 0 .. rope_dim)
  int64_t rows = 0;    // tokens
  int64_t heads = 1;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  int64_t rope_dim = 0;                // even
  const int32_t* positions = nullptr;  // [rows], each in [0, max_positions)
  const float* cos = nullptr;          // [max_positions, rope_dim / 2]
  const float* sin = nullptr;          // [max_positions, rope_dim / 2]
  int64_t max_positions = 0;
};

// out[i, j] = silu(gate[i, j]) * up[i, j], silu(z) = z / (1 + exp(-z)). out may alias gate.
struct SiluMulParams {
  const float* gate = nullptr;  // [rows, gate_stride]
  int64_t gate_stride = 0;      // 0: dim
  const float* up = nullptr;    // [rows, up_stride]
  int64_t up_stride = 0;        // 0: dim
  float* out = nullptr;         // [rows, out_stride]
  int64_t out_stride = 0;       // 0: dim
  int64_t rows = 0;
  int64_t dim = 0;
};

// out[i, :] = a[i, :] + b[i, :]. out may alias a or b.
struct AddParams {
  const float* a = nullptr;
  int64_t a_stride = 0;  // 0: dim
  const float* b = nullptr;
  int64_t b_stride = 0;  // 0: dim
  float* out = nullptr;
  int64_t out_stride = 0;  // 0: dim
  int64_t rows = 0;
  int64_t dim = 0;
};

// out[i, :] = x[index[i], :] (index null: x[i, :], a strided copy). Groups tokens by expert.
struct GatherRowsParams {
  const float* x = nullptr;        // [x_rows, x_stride]
  int64_t x_stride = 0;            // 0: dim
  int64_t x_rows = 0;              // bound for index
  const int32_t* index = nullptr;  // [rows] or null (identity)
  int64_t rows = 0;
  int64_t dim = 0;
  float* out = nullptr;    // [rows, out_stride]
  int64_t out_stride = 0;  // 0: dim
};

// out[index[i], :] += scale[i] * x[i, :] (scale null: 1). Rows are applied in order i = 0, 1, ...
// so repeated indices accumulate deterministically.
struct ScatterAddRowsParams {
  const float* x = nullptr;        // [rows, x_stride]
  int64_t x_stride = 0;            // 0: dim
  const int32_t* index = nullptr;  // [rows]
  const float* scale = nullptr;    // [rows] or null
  int64_t rows = 0;
  int64_t dim = 0;
  float* out = nullptr;    // [out_rows, out_stride]
  int64_t out_stride = 0;  // 0: dim
  int64_t out_rows = 0;    // bound for index
};

enum class MoeScoring : uint8_t {
  kSigmoid,  // DeepSeek-V3 (noaux_tc)
  kSoftmax,  // DeepSeek-V2 family
};

enum class MoeGroupScore : uint8_t {
  kTop2Sum,  // sum of the two largest (bias-corrected) scores in the group: noaux_tc
  kMax,      // largest score in the group: group_limited_greedy
};

// Router selection per token from router logits (the router Linear's output):
//   s = scoring(logits); c = s + bias (selection only); group score per group of E / n_group
//   experts; keep the topk_group best groups; pick the top_k experts by c among them;
//   weight_k = s[id_k], renormalised by sum + 1e-20 when norm_topk_prob, times scaling_factor.
// Ids are written best first (ties: lower expert id first).
struct MoeRouteParams {
  const float* logits = nullptr;  // [rows, logits_stride], num_experts used
  int64_t logits_stride = 0;      // 0: num_experts
  int64_t rows = 0;
  int64_t num_experts = 0;
  const float* bias = nullptr;  // [num_experts] e_score_correction_bias, or null
  MoeScoring scoring = MoeScoring::kSigmoid;
  MoeGroupScore group_score = MoeGroupScore::kTop2Sum;
  int64_t n_group = 1;     // divides num_experts
  int64_t topk_group = 1;  // in [1, n_group]
  int64_t top_k = 1;       // <= experts in the kept groups
  bool norm_topk_prob = true;
  float scaling_factor = 1.0f;      // routed_scaling_factor
  int32_t* expert_ids = nullptr;    // [rows, top_k]
  float* expert_weights = nullptr;  // [rows, top_k]
};

// The routed experts of one MoE layer on the router's selection (MoeRoute's outputs): for each
// token t and each of its top_k pairs (e = expert_ids[t, j], w = expert_weights[t, j]),
//   y_j = down_e(silu(gate_e x[t]) * up_e x[t]),   h[t] += sum_{j = 0..top_k-1} w * y_j,
// the k terms summed in order j = 0, 1, ... into one float32 value that is then added to h
// (deterministic). Every expert of the layer has the same shapes ([width, hidden] gate and up,
// [hidden, width] down) and dtype; the weights are passed as arrays (in backend memory) of
// per-expert data pointers, and for F8_E4M3 of per-expert F32 scale_inv pointers laid out as
// in WeightView (block_out x block_in blocks). A backend may return Unimplemented for shapes,
// dtypes or row counts it does not handle; the caller then runs the experts one by one.
struct MoeExpertsParams {
  const float* x = nullptr;  // [rows, x_stride], hidden values used per row
  int64_t x_stride = 0;      // 0: hidden
  int64_t rows = 0;
  int64_t hidden = 0;       // gate/up in_features, down out_features
  int64_t width = 0;        // gate/up out_features, down in_features (moe_intermediate_size)
  int64_t num_experts = 0;  // bound for expert_ids (entries of the pointer arrays)
  int64_t top_k = 1;
  const int32_t* expert_ids = nullptr;           // [rows, top_k], each in [0, num_experts)
  const float* expert_weights = nullptr;         // [rows, top_k]
  DType dtype = DType::kBF16;                    // of every expert weight: BF16/F16/F32 or F8_E4M3
  const void* const* gate = nullptr;             // [num_experts] pointers to [width, hidden]
  const void* const* up = nullptr;               // [num_experts] pointers to [width, hidden]
  const void* const* down = nullptr;             // [num_experts] pointers to [hidden, width]
  const float* const* gate_scale_inv = nullptr;  // F8_E4M3 only: [num_experts] pointers to
  const float* const* up_scale_inv = nullptr;    // [ceil(width/block_out), ceil(hidden/block_in)]
  const float* const* down_scale_inv = nullptr;  // and [ceil(hidden/bo), ceil(width/bi)]
  int64_t block_out = 128;
  int64_t block_in = 128;
  float* h = nullptr;    // [rows, h_stride], hidden values accumulated per row
  int64_t h_stride = 0;  // 0: hidden
  // Backends that take it (the optimized CPU backend, and CUDA, which copies the expert ids to
  // the host to group the rows; the others answer Unimplemented): [3 * num_experts] views,
  // every expert's gate, then up, then down, in any format the backend's Linear runs (I8/U4
  // included). When set, dtype, the pointer arrays and the block sizes above are ignored.
  const WeightView* expert_views = nullptr;
};

// Multi-head latent attention, plain (non-absorbed) form, over a variable-length batch:
//   score_h(t, s) = scale * ([q_nope_h(t); q_pe_h(t)] . [k_nope_h(s); k_pe(s)]),
//   out_h(t) = sum_s softmax_s(score_h(t, s)) v_h(s),
// where k_pe is one rope key per token shared by all heads. Sequence b owns query rows
// [cu_seqlens_q[b], cu_seqlens_q[b+1]) and key rows [cu_seqlens_k[b], cu_seqlens_k[b+1]); with
// q_len <= k_len, the queries are the last q_len tokens of the sequence (causal, bottom-right
// aligned): query i sees keys j <= k_len - q_len + i. q_len == k_len is a plain causal prefill;
// q_len < k_len lets new tokens attend to earlier context expanded to k_nope / v.
struct MlaPrefillParams {
  const float* q = nullptr;  // [q rows][heads][nope_dim + rope_dim] via the strides below
  int64_t q_token_stride = 0;
  int64_t q_head_stride = 0;
  const float* k_nope = nullptr;  // [k rows][heads][nope_dim]
  int64_t k_nope_token_stride = 0;
  int64_t k_nope_head_stride = 0;
  const float* k_pe = nullptr;  // [k rows][rope_dim], shared by heads
  int64_t k_pe_token_stride = 0;
  const float* v = nullptr;  // [k rows][heads][v_dim]
  int64_t v_token_stride = 0;
  int64_t v_head_stride = 0;
  float* out = nullptr;  // [q rows][heads][v_dim]
  int64_t out_token_stride = 0;
  int64_t out_head_stride = 0;
  const int32_t* cu_seqlens_q = nullptr;  // [num_seqs + 1], starts at 0, non-decreasing
  const int32_t* cu_seqlens_k = nullptr;  // [num_seqs + 1]
  int64_t num_seqs = 0;
  int64_t heads = 0;
  int64_t nope_dim = 0;
  int64_t rope_dim = 0;
  int64_t v_dim = 0;
  float softmax_scale = 1.0f;
};

// One layer of the paged latent cache: block b's rows start at data + b * block_stride; row
// `offset` of a block starts row_words() * offset words later and holds [latent (kv_lora_rank);
// rope key (rope_dim)] in `dtype`'s format (kernels/kv_cache_format.h). Strides count 4-byte
// words, which for the float32 cache are its elements. Token position p of a sequence lives in
// block block_table[p / block_size] at offset p % block_size (slot = block * block_size + offset).
// KvCacheWrite encodes rows into the format; MlaDecodeAttention decodes them as it reads. A
// backend that cannot read a format says so in SupportsKvCacheDType and refuses it in both ops.
struct PagedLatentCache {
  float* data = nullptr;  // this layer's rows of block 0 (float32 values for kFloat32)
  int64_t num_blocks = 0;
  int64_t block_size = 64;   // tokens per block
  int64_t block_stride = 0;  // words from one block to the next (>= block_size * row_words())
  int64_t kv_lora_rank = 0;
  int64_t rope_dim = 0;
  KvCacheDType dtype = KvCacheDType::kFloat32;
  // Values per row.
  int64_t row_width() const { return kv_lora_rank + rope_dim; }
  int64_t row_bytes() const { return KvCacheRowBytes(dtype, kv_lora_rank, rope_dim); }
  // 4-byte words per row (row_width() for float32).
  int64_t row_words() const { return row_bytes() / 4; }
};

// Writes each token's normalized latent and roped key into its cache slot, encoded in the cache's
// dtype (rounded to bf16, or quantized to fp8 with the row's group scales). slot_mapping[i] < 0
// skips row i (padding).
struct KvCacheWriteParams {
  const float* latent = nullptr;  // [rows, latent_stride], kv_lora_rank used
  int64_t latent_stride = 0;
  const float* k_pe = nullptr;  // [rows, k_pe_stride], rope_dim used
  int64_t k_pe_stride = 0;
  const int64_t* slot_mapping = nullptr;  // [rows], slot < num_blocks * block_size
  int64_t rows = 0;
  PagedLatentCache cache;
};

// Multi-head latent attention, absorbed form, reading the paged cache (MQA with one key per
// token): for query token t, head h, with q = [q_lat_h(t) (kv_lora_rank); q_pe_h(t) (rope_dim)],
//   score(s) = scale * q . cache_row(s),  out_h(t) = sum_s softmax_s(score(s)) latent(s)
// with cache_row(s) the stored row decoded to float32 and latent(s) its first kv_lora_rank values.
// Sequence b owns query rows [cu_seqlens_q[b], cu_seqlens_q[b+1]); its kv_lens[b] tokens (including
// the queries' own, already written) are in the cache through block_tables[b]. The queries are the
// sequence's last q_len tokens: query i sees cached positions p <= kv_lens[b] - q_len + i.
struct MlaDecodeParams {
  const float* q = nullptr;  // [q rows][heads][kv_lora_rank + rope_dim] via the strides
  int64_t q_token_stride = 0;
  int64_t q_head_stride = 0;
  PagedLatentCache cache;
  const int32_t* block_tables = nullptr;  // [num_seqs][block_table_stride]
  int64_t block_table_stride = 0;         // entries per sequence (max blocks per sequence)
  const int32_t* kv_lens = nullptr;       // [num_seqs], each <= block_table_stride * block_size
  const int32_t* cu_seqlens_q = nullptr;  // [num_seqs + 1]
  int64_t num_seqs = 0;
  int64_t heads = 0;
  float softmax_scale = 1.0f;
  float* out = nullptr;  // [q rows][heads][kv_lora_rank] via the strides
  int64_t out_token_stride = 0;
  int64_t out_head_stride = 0;
};

// Free and total bytes of the memory a backend allocates from (device memory for a GPU backend,
// MemAvailable / MemTotal for host backends).
struct MemoryInfo {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // ---- Memory in the backend's space -------------------------------------------------------
  // The model allocates its weights, activations, per-step metadata and the KV pool here and
  // moves data in and out with the copies below. The defaults (kernels/backend.cc) are host
  // memory and memcpy, right for every CPU backend; a device backend overrides all of them.
  // Copies are ordered with the ops (same stream); CopyToHost returns once the data is on the
  // host. Allocate returns 256-byte aligned memory, ResourceExhausted when there is none.
  virtual bool host_memory() const { return true; }
  virtual absl::StatusOr<void*> Allocate(size_t bytes);
  virtual void Free(void* ptr);
  virtual absl::Status CopyToBackend(void* dst, const void* host_src, size_t bytes);
  virtual absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes);
  virtual absl::Status CopyWithin(void* dst, const void* src, size_t bytes);
  virtual absl::Status Zero(void* dst, size_t bytes);
  // Waits for every op issued so far; returns the first asynchronous error, if any.
  virtual absl::Status Synchronize() { return absl::OkStatus(); }
  virtual absl::StatusOr<MemoryInfo> QueryMemory();

  // ---- Ops ---------------------------------------------------------------------------------
  // For a device backend (host_memory() false), index arrays (ids, positions, slots, block
  // tables, cu_seqlens) are device memory the host cannot read cheaply: the caller validates
  // them before upload (StepPlan does), the op validates shapes and dtypes on the host, and its
  // kernels skip out-of-range indices instead of faulting.

  virtual absl::Status Embedding(const EmbeddingParams& p) = 0;
  virtual absl::Status RmsNorm(const RmsNormParams& p) = 0;
  virtual absl::Status Linear(const LinearParams& p) = 0;
  // Linear on each product (see CheckLinearGroup for the contract); the default checks the
  // contract, then runs Linear on each in order, naming the product in an error.
  virtual absl::Status LinearGroup(std::span<const LinearParams> products);
  virtual absl::Status Rope(const RopeParams& p) = 0;
  virtual absl::Status SiluMul(const SiluMulParams& p) = 0;
  virtual absl::Status Add(const AddParams& p) = 0;
  virtual absl::Status GatherRows(const GatherRowsParams& p) = 0;
  virtual absl::Status ScatterAddRows(const ScatterAddRowsParams& p) = 0;
  virtual absl::Status MoeRoute(const MoeRouteParams& p) = 0;
  virtual absl::Status MlaPrefillAttention(const MlaPrefillParams& p) = 0;
  virtual absl::Status KvCacheWrite(const KvCacheWriteParams& p) = 0;
  virtual absl::Status MlaDecodeAttention(const MlaDecodeParams& p) = 0;
  // The default is Unimplemented (the caller falls back to Linear/SiluMul/ScatterAddRows per
  // expert); the reference, checked-memory, optimized CPU and CUDA backends implement it.
  virtual absl::Status MoeExperts(const MoeExpertsParams& p);

  // One token per spec from rows of logits in backend memory (kernels/sample_rows.h): results
  // on the host, rows unchanged afterwards. The default runs the reference (SampleRowsOnHost) on
  // the rows where they are for a host-memory backend, and on host copies of the named rows
  // otherwise (a device backend without a sampler of its own: correct, but every row crosses);
  // the CUDA backend samples on the device and copies back only the results.
  virtual absl::Status SampleRows(const SampleRowsParams& p);

  // Whether KvCacheWrite and MlaDecodeAttention handle a cache in `dtype`'s format. Every backend
  // reads every format (CUDA: kernels/cuda/kv_cache.cu and mla_decode*.{cu,cuh}).
  virtual bool SupportsKvCacheDType(KvCacheDType /*dtype*/) const { return true; }
  // Whether Linear takes LinearParams::weight_transposed.
  virtual bool SupportsTransposedLinear() const { return false; }
};

// The plain float32 reference implementation (kernels/cpu/reference_backend.cc): the oracle that
// optimized and CUDA backends are tested against.
std::unique_ptr<Backend> MakeCpuReferenceBackend();

// A test double for device backends (kernels/cpu/checked_memory_backend.cc): the reference ops
// over memory that must come from this backend's Allocate(). host_memory() is false, so the
// model treats it as a device; every op checks that each pointer it is given lies inside one of
// its allocations (InvalidArgument naming the op and field otherwise). On the CPU, it proves the
// model never hands host memory to a device backend.
std::unique_ptr<Backend> MakeCheckedMemoryBackend();

// Backends by name (kernels/backend_registry.cc): "cpu" (the fastest CPU backend built in),
// "cpu-reference", "cuda" (device 0; Unavailable with the reason when the binary was built
// without CUDA or no device is present), "cuda-fp32" (the same with float32 activations in every
// Linear: exact, slower prefill), "checked-memory" (tests). InvalidArgument for an unknown
// name, listing the known ones.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(std::string_view name);

}  // namespace r2
