// MLA decode attention on the GPU at DeepSeek-V3 shape (128 heads, absorbed 576-wide cache rows
// of float32, 512-wide latent output, 64-token pages): achieved GB/s (cache rows read + q + out)
// over the device's copy bandwidth measured in the same run (a large device-to-device cudaMemcpy,
// read plus write bytes), for batch 1/16/64/128 and context 1K/4K/16K. Also one causal prefill
// (plain form, 192/128 head dims) in TFLOP/s. CUDA events, warm-up, median of the timed runs.
//
//   build/<dir>/tests/r2_cuda_mla_bench        (prints "skipped: no CUDA device" without one)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_context.h"

namespace {

constexpr int kHeads = 128, kLora = 512, kRope = 64, kWidth = kLora + kRope, kBlock = 64;
constexpr float kScale = 0.1352338f;

#define CHECK_CUDA(call)                                                                         \
  do {                                                                                           \
    cudaError_t _e = (call);                                                                     \
    if (_e != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(_e)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

#define CHECK_OK(expr)                                                \
  do {                                                                \
    absl::Status _s = (expr);                                         \
    if (!_s.ok()) {                                                   \
      std::fprintf(stderr, "%s: %s\n", #expr, _s.ToString().c_str()); \
      std::exit(1);                                                   \
    }                                                                 \
  } while (0)

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
  int batch, context;
  double ms, gbs, tflops;
};

}  // namespace

int main() {
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

  // One cache pool for the largest case; tables give each sequence shuffled blocks.
  const std::vector<int> batches = {1, 16, 64, 128}, contexts = {1024, 4096, 16384};
  const int max_batch = 128, max_context = 16384, blocks_per_seq = max_context / kBlock;
  const int64_t num_blocks = int64_t{max_batch} * blocks_per_seq;
  float* pool = nullptr;
  CHECK_CUDA(cudaMalloc(&pool, sizeof(float) * num_blocks * kBlock * kWidth));
  FillRandom(pool, num_blocks * kBlock * kWidth, rng);
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  int32_t* tables = Upload(perm);  // sequence b: entries [b * blocks_per_seq, ...)
  float *q = nullptr, *out = nullptr;
  CHECK_CUDA(cudaMalloc(&q, sizeof(float) * max_batch * kHeads * kWidth));
  CHECK_CUDA(cudaMalloc(&out, sizeof(float) * max_batch * kHeads * kLora));
  FillRandom(q, int64_t{max_batch} * kHeads * kWidth, rng);

  std::vector<Row> rows;
  double graph_ms = 0.0;
  for (int context : contexts) {
    for (int batch : batches) {
      std::vector<int32_t> cu(batch + 1), kv(batch, context);
      std::iota(cu.begin(), cu.end(), 0);
      int32_t* cu_dev = Upload(cu);
      int32_t* kv_dev = Upload(kv);
      const r2::MlaDecodeParams p{.q = q,
                                  .q_token_stride = kHeads * kWidth,
                                  .q_head_stride = kWidth,
                                  .cache = {.data = pool,
                                            .num_blocks = num_blocks,
                                            .block_size = kBlock,
                                            .block_stride = kBlock * kWidth,
                                            .kv_lora_rank = kLora,
                                            .rope_dim = kRope},
                                  .block_tables = tables,
                                  .block_table_stride = blocks_per_seq,
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
      if (batch == 1 && context == 4096) {
        // The same call captured in a CUDA Graph (after the warm-up above) and replayed.
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CHECK_CUDA(cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeGlobal));
        CHECK_OK(r2::cuda::MlaDecodeAttention(ctx, p));
        CHECK_CUDA(cudaStreamEndCapture(ctx.stream, &graph));
        CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
        graph_ms =
            MedianMs(ctx.stream, 3, 15, [&] { CHECK_CUDA(cudaGraphLaunch(exec, ctx.stream)); });
        CHECK_CUDA(cudaGraphExecDestroy(exec));
        CHECK_CUDA(cudaGraphDestroy(graph));
      }
      const double bytes = 4.0 * batch * (double(context) * kWidth + kHeads * (kWidth + kLora));
      const double flops = 2.0 * batch * kHeads * double(context) * (kWidth + kLora);
      rows.push_back({batch, context, ms, bytes / (ms * 1e-3) / 1e9, flops / (ms * 1e-3) / 1e12});
      CHECK_CUDA(cudaFree(cu_dev));
      CHECK_CUDA(cudaFree(kv_dev));
    }
  }
  CHECK_CUDA(cudaFree(q));
  CHECK_CUDA(cudaFree(out));
  CHECK_CUDA(cudaFree(pool));
  CHECK_CUDA(cudaFree(tables));

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

  std::printf("\nMLA attention on %s (%d SMs), float32 cache, %d heads, %d+%d cache row\n",
              prop.name, prop.multiProcessorCount, kHeads, kLora, kRope);
  std::printf("copy bandwidth (D2D memcpy, read+write): %.0f GB/s\n", copy_gbs);
  std::printf("prefill 1 x %d tokens causal, dims 192/128: %.2f ms, %.1f TFLOP/s\n", tokens,
              prefill_ms, prefill_flops / (prefill_ms * 1e-3) / 1e12);
  std::printf("decode batch 1, context 4096, replayed as a CUDA Graph: %.3f ms\n", graph_ms);
  std::printf("decode (issue goal: >= 80%% of copy at 4K+ context):\n");
  std::printf("%-8s %-8s %10s %10s %8s %10s\n", "context", "batch", "ms", "GB/s", "of copy",
              "TFLOP/s");
  for (const Row& r : rows) {
    std::printf("%-8d %-8d %10.3f %10.0f %7.1f%% %10.1f\n", r.context, r.batch, r.ms, r.gbs,
                100.0 * r.gbs / copy_gbs, r.tflops);
  }
  return 0;
}
