// MLA decode attention alone, at the small model's shapes (16 heads, latent 256 + rope 32, 64-token
// pages): `seqs` sequences of `context` cached positions each, one query row per sequence, one
// MlaDecodeAttention call per layer over `layers` layers whose caches are interleaved in one
// paged pool (as the engine's are). `evict=1` streams a 512 MiB buffer between steps, so the
// cache rows come from memory as they do in a decode step that streams its weights; `evict=0`
// leaves them in cache. Prints the median step time, the multiply-adds per second and the rate
// the step reads its cache rows at (wall clock and process CPU time).
//
//   OMP_NUM_THREADS=2 build/<dir>/tests/r2_cpu_mla_decode_bench [seqs=1,8] [context=72]
//       [layers=12] [steps=40] [evict=1] [kv=f32|bf16|fp8]
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/kv_cache_format.h"
#include "tests/bench/cpu_bench_util.h"

namespace r2 {
namespace {

int Run(int argc, char** argv) {
  std::vector<int64_t> seq_counts = {1, 8};
  int64_t context = 72, layers = 12, steps = 40;
  bool evict = true;
  KvCacheDType kv = KvCacheDType::kFloat32;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto [key, value] = bench::SplitArg(arg);
    bool ok = true;
    if (key == "seqs") {
      ok = bench::ParseInt64List(value, &seq_counts);
    } else if (key == "context") {
      ok = bench::ParseInt64(value, &context);
    } else if (key == "layers") {
      ok = bench::ParseInt64(value, &layers);
    } else if (key == "steps") {
      ok = bench::ParseInt64(value, &steps);
    } else if (key == "evict" && (value == "0" || value == "1")) {
      evict = value == "1";
    } else if (key == "kv" && (value == "f32" || value == "bf16" || value == "fp8")) {
      kv = value == "f32"    ? KvCacheDType::kFloat32
           : value == "bf16" ? KvCacheDType::kBF16
                             : KvCacheDType::kFp8E4M3;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "bad argument '%s' (seqs=N,N,... context=N layers=N steps=N evict=0|1 "
                   "kv=f32|bf16|fp8)\n",
                   arg.c_str());
      return 2;
    }
  }
  for (int64_t seqs : seq_counts) {
    if (seqs < 1) {
      std::fprintf(stderr, "seqs must be >= 1, got %lld\n", static_cast<long long>(seqs));
      return 2;
    }
  }
  if (context < 1 || layers < 1 || steps < 1) {
    std::fprintf(stderr, "context, layers and steps must be >= 1\n");
    return 2;
  }
  constexpr int64_t kHeads = 16, kLora = 256, kRope = 32, kBlock = 64;
  auto backend = MakeBackend("cpu");
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> val(-1.0f, 1.0f);
  std::vector<char> sweep(evict ? size_t{512} << 20 : 0, 1);
  for (int64_t seqs : seq_counts) {
    PagedLatentCache shape{.num_blocks = 1,
                           .block_size = kBlock,
                           .kv_lora_rank = kLora,
                           .rope_dim = kRope,
                           .dtype = kv};
    const int64_t words = shape.row_words(), width = shape.row_width();
    const int64_t blocks_per_seq = (context + kBlock - 1) / kBlock;
    const int64_t num_blocks = seqs * blocks_per_seq;
    // The pool: [block][layer][row], as the engine lays out its layers' caches.
    // From the backend's allocator, as the engine's pool is.
    const int64_t pool_words = num_blocks * layers * kBlock * words;
    absl::StatusOr<void*> pool_memory = (*backend)->Allocate(pool_words * 4);
    if (!pool_memory.ok()) {
      std::fprintf(stderr, "%s\n", pool_memory.status().ToString().c_str());
      return 1;
    }
    std::span<float> pool(static_cast<float*>(*pool_memory), pool_words);
    for (float& v : pool) v = val(rng) * 0.25f;
    if (kv != KvCacheDType::kFloat32) {  // encode valid rows of the format from float32 values
      std::vector<float> row(width);
      for (int64_t r = 0; r < num_blocks * layers * kBlock; ++r) {
        for (float& v : row) v = val(rng);
        EncodeKvCacheRow(kv, kLora, kRope, row.data(), row.data() + kLora, pool.data() + r * words);
      }
    }
    std::vector<int32_t> tables(num_blocks);
    std::iota(tables.begin(), tables.end(), 0);
    std::shuffle(tables.begin(), tables.end(), rng);
    std::vector<int32_t> kv_lens(seqs, static_cast<int32_t>(context)), cu(seqs + 1);
    std::iota(cu.begin(), cu.end(), 0);
    std::vector<float> q(seqs * kHeads * width), out(seqs * kHeads * kLora);
    for (float& v : q) v = val(rng);
    std::vector<double> wall, cpu;
    for (int64_t step = -2; step < steps; ++step) {
      for (size_t i = 0; i < sweep.size(); i += 64) sweep[i] = static_cast<char>(sweep[i] + 1);
      const double t0 = bench::ClockSeconds(CLOCK_MONOTONIC),
                   c0 = bench::ClockSeconds(CLOCK_PROCESS_CPUTIME_ID);
      for (int64_t l = 0; l < layers; ++l) {
        MlaDecodeParams p{.q = q.data(),
                          .q_token_stride = kHeads * width,
                          .q_head_stride = width,
                          .cache = shape,
                          .block_tables = tables.data(),
                          .block_table_stride = blocks_per_seq,
                          .kv_lens = kv_lens.data(),
                          .cu_seqlens_q = cu.data(),
                          .num_seqs = seqs,
                          .heads = kHeads,
                          .softmax_scale = 0.1f,
                          .out = out.data(),
                          .out_token_stride = kHeads * kLora,
                          .out_head_stride = kLora};
        p.cache.data = pool.data() + l * kBlock * words;
        p.cache.num_blocks = num_blocks;
        p.cache.block_stride = layers * kBlock * words;
        if (absl::Status s = (*backend)->MlaDecodeAttention(p); !s.ok()) {
          std::fprintf(stderr, "%s\n", s.ToString().c_str());
          return 1;
        }
      }
      if (step < 0) continue;
      wall.push_back(bench::ClockSeconds(CLOCK_MONOTONIC) - t0);
      cpu.push_back(bench::ClockSeconds(CLOCK_PROCESS_CPUTIME_ID) - c0);
    }
    (*backend)->Free(pool.data());
    const double w = bench::Median(wall), c = bench::Median(cpu);
    const double fmas = static_cast<double>(layers * seqs * kHeads * context * (width + kLora));
    const double bytes = static_cast<double>(layers * seqs * context * words * 4);
    std::printf(
        "seqs %3lld context %lld: %7.3f ms/step (fastest %.3f), %.1f GFMA/s, cache rows %.2f MB "
        "at %.2f GB/s; process CPU %.3f ms/step\n",
        static_cast<long long>(seqs), static_cast<long long>(context), 1e3 * w,
        1e3 * *std::min_element(wall.begin(), wall.end()), fmas / w * 1e-9, bytes * 1e-6,
        bytes / w * 1e-9, 1e3 * c);
  }
  return 0;
}

}  // namespace
}  // namespace r2

int main(int argc, char** argv) { return r2::Run(argc, argv); }
