// MLA decode attention on the GPU at DeepSeek-V3 shape (128 heads, absorbed 576-wide cache rows,
// 512-wide latent output, 64-token pages): achieved GB/s (cache rows read + q + out) over the
// device's copy bandwidth measured in the same run (a large device-to-device cudaMemcpy, read plus
// write bytes), for batch 1/16/64/128 and context 1K/4K/16K. Also one causal prefill (plain form,
// 192/128 head dims) in TFLOP/s, and KvCacheWrite's rate. CUDA events, warm-up, median of the
// timed runs.
//
// The KV cache format (kernels/kv_cache_format.h: float32 2304, bf16 1152, fp8 656 bytes a row):
//   (no option)               the grid on the float32 cache, then bf16 and fp8 at context 4096 x
//                             batch 1 and 128; the last table ("===") compares the formats there
//   --kv-cache-dtype=FORMAT   the whole grid on one format (float32, bf16 or fp8)
//
//   build/<dir>/tests/r2_cuda_mla_bench [--kv-cache-dtype=FORMAT]
// prints "skipped: no CUDA device" without one.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/kv_cache_format.h"
#include "tests/bench/cuda_bench_util.h"

namespace {

constexpr int kHeads = 128, kLora = 512, kRope = 64, kWidth = kLora + kRope, kBlock = 64;
constexpr float kScale = 0.1352338f;

// Median milliseconds of `runs` calls of f on `stream`, after `warmup` untimed calls.
template <typename F>
double MedianMs(cudaStream_t stream, int warmup, int runs, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    f();
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Fills n floats of device memory with normal(0, 1) values: one random chunk from the host, then
// device-to-device copies doubling the filled prefix.
void FillRandom(float* dev, int64_t n, std::mt19937& rng) {
  const int64_t chunk = std::min<int64_t>(n, int64_t{1} << 20);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> host(chunk);
  for (float& x : host) x = dist(rng);
  CHECK_CUDA(cudaMemcpy(dev, host.data(), sizeof(float) * chunk, cudaMemcpyHostToDevice));
  for (int64_t filled = chunk; filled < n; filled *= 2) {
    CHECK_CUDA(cudaMemcpy(dev + filled, dev, sizeof(float) * std::min(filled, n - filled),
                          cudaMemcpyDeviceToDevice));
  }
}

template <typename T>
T* Upload(const std::vector<T>& v) {
  T* dev = nullptr;
  CHECK_CUDA(cudaMalloc(&dev, sizeof(T) * std::max<size_t>(1, v.size())));
  CHECK_CUDA(cudaMemcpy(dev, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice));
  return dev;
}

struct Row {
  r2::KvCacheDType dtype;
  int batch, context;
  double ms, gbs, tflops;
};

// A paged pool in `dtype`'s format for max_batch sequences of max_context tokens, every row
// written by KvCacheWrite from random latent rows; shuffled block tables.
struct Pool {
  r2::PagedLatentCache cache;
  int32_t* tables = nullptr;  // sequence b: entries [b * blocks_per_seq, ...)
  int blocks_per_seq = 0;
  double write_ms = 0.0;  // one KvCacheWrite of kWriteRows rows
};

constexpr int64_t kWriteRows = 65536;

Pool MakePool(r2::cuda::Context& ctx, r2::KvCacheDType dtype, int max_batch, int max_context,
              std::mt19937& rng) {
  Pool pool;
  pool.blocks_per_seq = max_context / kBlock;
  const int64_t num_blocks = int64_t{max_batch} * pool.blocks_per_seq;
  const int64_t row_words = r2::KvCacheRowBytes(dtype, kLora, kRope) / 4;
  float* data = nullptr;
  CHECK_CUDA(cudaMalloc(&data, sizeof(float) * num_blocks * kBlock * row_words));
  pool.cache = {.data = data,
                .num_blocks = num_blocks,
                .block_size = kBlock,
                .block_stride = kBlock * row_words,
                .kv_lora_rank = kLora,
                .rope_dim = kRope,
                .dtype = dtype};
  float* src = nullptr;
  int64_t* slots = nullptr;
  CHECK_CUDA(cudaMalloc(&src, sizeof(float) * kWriteRows * kWidth));
  CHECK_CUDA(cudaMalloc(&slots, sizeof(int64_t) * kWriteRows));
  FillRandom(src, kWriteRows * kWidth, rng);
  const int64_t total = num_blocks * kBlock;
  std::vector<int64_t> host_slots(kWriteRows);
  for (int64_t first = 0; first < total; first += kWriteRows) {
    const int64_t rows = std::min(kWriteRows, total - first);
    std::iota(host_slots.begin(), host_slots.begin() + rows, first);
    CHECK_CUDA(
        cudaMemcpy(slots, host_slots.data(), sizeof(int64_t) * rows, cudaMemcpyHostToDevice));
    const r2::KvCacheWriteParams w{.latent = src,
                                   .latent_stride = kWidth,
                                   .k_pe = src + kLora,
                                   .k_pe_stride = kWidth,
                                   .slot_mapping = slots,
                                   .rows = rows,
                                   .cache = pool.cache};
    if (first == 0 && rows == kWriteRows) {
      pool.write_ms = MedianMs(ctx.stream, 1, 5, [&] { CHECK_OK(r2::cuda::KvCacheWrite(ctx, w)); });
    } else {
      CHECK_OK(r2::cuda::KvCacheWrite(ctx, w));
    }
  }
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(slots));
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  pool.tables = Upload(perm);
  return pool;
}

void FreePool(Pool& pool) {
  CHECK_CUDA(cudaFree(pool.cache.data));
  CHECK_CUDA(cudaFree(pool.tables));
}

// Decode over `pool` for each (context, batch); with graph_ms, also batch 1 at 4K context
// captured in a CUDA Graph and replayed.
void DecodeGrid(r2::cuda::Context& ctx, const Pool& pool, const std::vector<int>& contexts,
                const std::vector<int>& batches, float* q, float* out, std::vector<Row>* rows,
                double* graph_ms) {
  const double row_bytes = static_cast<double>(pool.cache.row_bytes());
  for (int context : contexts) {
    for (int batch : batches) {
      std::vector<int32_t> cu(batch + 1), kv(batch, context);
      std::iota(cu.begin(), cu.end(), 0);
      int32_t* cu_dev = Upload(cu);
      int32_t* kv_dev = Upload(kv);
      const r2::MlaDecodeParams p{.q = q,
                                  .q_token_stride = kHeads * kWidth,
                                  .q_head_stride = kWidth,
                                  .cache = pool.cache,
                                  .block_tables = pool.tables,
                                  .block_table_stride = pool.blocks_per_seq,
                                  .kv_lens = kv_dev,
                                  .cu_seqlens_q = cu_dev,
                                  .num_seqs = batch,
                                  .heads = kHeads,
                                  .softmax_scale = kScale,
                                  .out = out,
                                  .out_token_stride = kHeads * kLora,
                                  .out_head_stride = kLora};
      const double ms =
          MedianMs(ctx.stream, 3, 15, [&] { CHECK_OK(r2::cuda::MlaDecodeAttention(ctx, p)); });
      if (graph_ms != nullptr && batch == 1 && context == 4096) {
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CHECK_CUDA(cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeGlobal));
        CHECK_OK(r2::cuda::MlaDecodeAttention(ctx, p));
        CHECK_CUDA(cudaStreamEndCapture(ctx.stream, &graph));
        CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
        *graph_ms =
            MedianMs(ctx.stream, 3, 15, [&] { CHECK_CUDA(cudaGraphLaunch(exec, ctx.stream)); });
        CHECK_CUDA(cudaGraphExecDestroy(exec));
        CHECK_CUDA(cudaGraphDestroy(graph));
      }
      const double bytes = batch * (double(context) * row_bytes + 4.0 * kHeads * (kWidth + kLora));
      const double flops = 2.0 * batch * kHeads * double(context) * (kWidth + kLora);
      rows->push_back({pool.cache.dtype, batch, context, ms, bytes / (ms * 1e-3) / 1e9,
                       flops / (ms * 1e-3) / 1e12});
      CHECK_CUDA(cudaFree(cu_dev));
      CHECK_CUDA(cudaFree(kv_dev));
    }
  }
}

void PrintRow(const Row& r, double copy_gbs) {
  std::printf("%-8s %-8d %-8d %10.3f %10.0f %7.1f%% %10.1f\n", r2::KvCacheDTypeName(r.dtype),
              r.context, r.batch, r.ms, r.gbs, 100.0 * r.gbs / copy_gbs, r.tflops);
}

}  // namespace

int main(int argc, char** argv) {
  // --kv-cache-dtype=FORMAT: the whole grid on that format only.
  std::optional<r2::KvCacheDType> only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::string flag = "--kv-cache-dtype=";
    absl::StatusOr<std::optional<r2::KvCacheDType>> parsed =
        arg.rfind(flag, 0) == 0
            ? r2::ParseKvCacheDType(arg.substr(flag.size()))
            : absl::InvalidArgumentError("unknown argument '" + arg +
                                         "' (expected --kv-cache-dtype=FORMAT)");
    if (!parsed.ok() || !parsed->has_value()) {
      std::fprintf(stderr, "%s\n",
                   parsed.ok() ? "--kv-cache-dtype: auto is not a format here (float32, bf16, fp8)"
                               : parsed.status().ToString().c_str());
      return 2;
    }
    only = **parsed;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("skipped: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  r2::cuda::Context ctx;
  CHECK_CUDA(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  ctx.sm_count = prop.multiProcessorCount;
  ctx.max_smem_per_block_optin = static_cast<int>(prop.sharedMemPerBlockOptin);
  std::mt19937 rng(1);

  // Copy bandwidth: 2 GiB device to device, read + write bytes.
  const size_t copy_bytes = size_t{2} << 30;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, copy_bytes));
  CHECK_CUDA(cudaMalloc(&dst, copy_bytes));
  CHECK_CUDA(cudaMemset(src, 1, copy_bytes));
  const double copy_ms = MedianMs(ctx.stream, 2, 9, [&] {
    CHECK_CUDA(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, ctx.stream));
  });
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));

  const std::vector<int> batches = {1, 16, 64, 128}, contexts = {1024, 4096, 16384};
  const int max_batch = 128, max_context = 16384;
  float *q = nullptr, *out = nullptr;
  CHECK_CUDA(cudaMalloc(&q, sizeof(float) * max_batch * kHeads * kWidth));
  CHECK_CUDA(cudaMalloc(&out, sizeof(float) * max_batch * kHeads * kLora));
  FillRandom(q, int64_t{max_batch} * kHeads * kWidth, rng);

  const r2::KvCacheDType grid_dtype = only.value_or(r2::KvCacheDType::kFloat32);
  std::vector<Row> rows, formats;
  std::vector<std::pair<r2::KvCacheDType, double>> write_ms;
  double graph_ms = 0.0;
  {
    Pool pool = MakePool(ctx, grid_dtype, max_batch, max_context, rng);
    write_ms.push_back({grid_dtype, pool.write_ms});
    DecodeGrid(ctx, pool, contexts, batches, q, out, &rows, &graph_ms);
    FreePool(pool);
  }
  if (!only) {
    for (const Row& r : rows) {
      if (r.context == 4096 && (r.batch == 1 || r.batch == 128)) formats.push_back(r);
    }
    for (r2::KvCacheDType dtype : {r2::KvCacheDType::kBF16, r2::KvCacheDType::kFp8E4M3}) {
      Pool pool = MakePool(ctx, dtype, max_batch, 4096, rng);
      write_ms.push_back({dtype, pool.write_ms});
      DecodeGrid(ctx, pool, {4096}, {1, 128}, q, out, &formats, nullptr);
      FreePool(pool);
    }
  }
  CHECK_CUDA(cudaFree(q));
  CHECK_CUDA(cudaFree(out));

  // Causal prefill of one 4096-token sequence, V3 plain-form head dims.
  const int tokens = 4096, nope = 128, v_dim = 128, dq = nope + kRope;
  float *pq, *pkv, *ppe, *pout;
  CHECK_CUDA(cudaMalloc(&pq, sizeof(float) * tokens * kHeads * dq));
  CHECK_CUDA(cudaMalloc(&pkv, sizeof(float) * tokens * kHeads * (nope + v_dim)));
  CHECK_CUDA(cudaMalloc(&ppe, sizeof(float) * tokens * kRope));
  CHECK_CUDA(cudaMalloc(&pout, sizeof(float) * tokens * kHeads * v_dim));
  FillRandom(pq, int64_t{tokens} * kHeads * dq, rng);
  FillRandom(pkv, int64_t{tokens} * kHeads * (nope + v_dim), rng);
  FillRandom(ppe, int64_t{tokens} * kRope, rng);
  int32_t* pcu = Upload(std::vector<int32_t>{0, tokens});
  const r2::MlaPrefillParams pp{.q = pq,
                                .q_token_stride = kHeads * dq,
                                .q_head_stride = dq,
                                .k_nope = pkv,
                                .k_nope_token_stride = kHeads * (nope + v_dim),
                                .k_nope_head_stride = nope + v_dim,
                                .k_pe = ppe,
                                .k_pe_token_stride = kRope,
                                .v = pkv + nope,
                                .v_token_stride = kHeads * (nope + v_dim),
                                .v_head_stride = nope + v_dim,
                                .out = pout,
                                .out_token_stride = kHeads * v_dim,
                                .out_head_stride = v_dim,
                                .cu_seqlens_q = pcu,
                                .cu_seqlens_k = pcu,
                                .num_seqs = 1,
                                .heads = kHeads,
                                .nope_dim = nope,
                                .rope_dim = kRope,
                                .v_dim = v_dim,
                                .softmax_scale = kScale};
  const double prefill_ms =
      MedianMs(ctx.stream, 2, 7, [&] { CHECK_OK(r2::cuda::MlaPrefillAttention(ctx, pp)); });
  const double prefill_flops = 2.0 * kHeads * (double(tokens) * (tokens + 1) / 2) * (dq + v_dim);
  for (float* ptr : {pq, pkv, ppe, pout}) CHECK_CUDA(cudaFree(ptr));
  CHECK_CUDA(cudaFree(pcu));
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));

  std::printf("\nMLA attention on %s (%d SMs), %s cache, %d heads, %d+%d cache row\n", prop.name,
              prop.multiProcessorCount, r2::KvCacheDTypeName(grid_dtype), kHeads, kLora, kRope);
  std::printf("copy bandwidth (D2D memcpy, read+write): %.0f GB/s\n", copy_gbs);
  std::printf("prefill 1 x %d tokens causal, dims 192/128: %.2f ms, %.1f TFLOP/s\n", tokens,
              prefill_ms, prefill_flops / (prefill_ms * 1e-3) / 1e12);
  for (auto [dtype, ms] : write_ms) {
    std::printf("KvCacheWrite %lld rows, %s: %.3f ms (%.0f GB/s read + written)\n",
                static_cast<long long>(kWriteRows), r2::KvCacheDTypeName(dtype), ms,
                kWriteRows * (4.0 * kWidth + r2::KvCacheRowBytes(dtype, kLora, kRope) + 8) /
                    (ms * 1e-3) / 1e9);
  }
  std::printf("decode batch 1, context 4096, replayed as a CUDA Graph: %.3f ms\n", graph_ms);
  std::printf("decode (issue goal: >= 80%% of copy at 4K+ context):\n");
  std::printf("%-8s %-8s %-8s %10s %10s %8s %10s\n", "cache", "context", "batch", "ms", "GB/s",
              "of copy", "TFLOP/s");
  for (const Row& r : rows) PrintRow(r, copy_gbs);
  if (!formats.empty()) {
    std::printf("=== MLA decode by KV cache format, context 4096 (copy %.0f GB/s)\n", copy_gbs);
    std::printf("%-8s %-8s %-8s %10s %10s %8s %10s\n", "cache", "context", "batch", "ms", "GB/s",
                "of copy", "TFLOP/s");
    for (const Row& r : formats) PrintRow(r, copy_gbs);
  }
  return 0;
}
