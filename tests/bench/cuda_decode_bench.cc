// End-to-end decode on the CUDA backend: DeepseekModel::Forward steps at batch 1 and 64 with a
// ~512-token context, against the weight-bandwidth floor measured in the same run.
//
//   r2_cuda_decode_bench [--model DIR] [--steps N] [--context N] [--batches 1,64]
//
// Without --model it writes the "bench-2b" preset (engine/model/tiny_model.h, ~2.5 B BF16
// parameters) to a temp dir and removes it afterwards. Per batch: prefill every sequence (timed
// separately), then warm-up steps, then N timed decode steps, each a full Forward: plan upload,
// every layer, the logits copied back to the host (as the engine needs them for sampling).
//
// The floor of a step is the bytes it must read over the copy bandwidth: every attention weight
// the absorbed decode path reads, the dense and shared MLPs, the router, the routed experts the
// step actually ran (DeepseekModel::last_routed_experts_run), the head, and the KV cache rows of
// every sequence in every layer. The copy bandwidth is (read + write bytes) / time of a large
// device-to-device cudaMemcpy measured here. Prints "skipped: no CUDA device" and exits 0
// without a device.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/model/checkpoint.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/model_weights.h"
#include "engine/model/tiny_model.h"
#include "kernels/backend.h"
#include "tests/unit/test_paths.h"

namespace r2 {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

struct Options {
  std::string model_dir;
  int64_t steps = 32;
  int64_t context = 512;
  std::vector<int64_t> batches = {1, 64};
};

bool ParseArgs(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (a != flag || i + 1 >= argc) return nullptr;
      return argv[++i];
    };
    if (const char* v = value("--model")) {
      o.model_dir = v;
    } else if (const char* v = value("--steps")) {
      if (!absl::SimpleAtoi(v, &o.steps) || o.steps < 1) return false;
    } else if (const char* v = value("--context")) {
      if (!absl::SimpleAtoi(v, &o.context) || o.context < 1) return false;
    } else if (const char* v = value("--batches")) {
      o.batches.clear();
      for (absl::string_view piece : absl::StrSplit(v, ',')) {
        int64_t b = 0;
        if (!absl::SimpleAtoi(piece, &b) || b < 1) return false;
        o.batches.push_back(b);
      }
    } else {
      return false;
    }
  }
  return true;
}

// Device-to-device copy bandwidth, (read + write bytes) / s, best of several 1 GiB copies.
double CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaFree(a);
    return 0;
  }
  cudaMemset(a, 1, bytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  float best_ms = 1e30f;
  for (int i = 0; i < 6; ++i) {
    cudaEventRecord(start);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i > 0) best_ms = std::min(best_ms, ms);  // the first one warms up
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (best_ms * 1e-3);
}

// Bytes the decode path reads per step from the weights, split so the routed experts can be
// counted per step.
struct StepBytes {
  int64_t fixed = 0;       // attention (absorbed path), norms, dense + shared MLPs, router, head
  int64_t per_expert = 0;  // one routed expert (gate + up + down, scales included)
};

int64_t LinearBytes(const model::Checkpoint& ckpt, const std::string& name) {
  int64_t bytes = 0;
  for (const char* suffix : {".weight", ".weight_scale_inv"}) {
    auto t = ckpt.Tensor(name + suffix);
    if (t.ok()) bytes += model::TensorBytes(*t);
  }
  return bytes;
}

StepBytes DecodeStepBytes(const model::Checkpoint& ckpt) {
  const model::ModelConfig& c = ckpt.config();
  StepBytes b;
  auto mlp = [&](const std::string& p) {
    return LinearBytes(ckpt, p + "gate_proj") + LinearBytes(ckpt, p + "up_proj") +
           LinearBytes(ckpt, p + "down_proj");
  };
  // The absorbed matrices W_UK^T and W_UV are float32 copies of kv_b_proj (kv_b itself is only
  // read by prefill).
  const int64_t absorbed =
      2 * c.num_attention_heads * c.kv_lora_rank * c.qk_nope_head_dim * int64_t{4};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* w : {"self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.q_proj",
                          "self_attn.kv_a_proj_with_mqa", "self_attn.o_proj"}) {
      b.fixed += LinearBytes(ckpt, p + w);
    }
    b.fixed += absorbed;
    if (!c.is_moe_layer(l)) {
      b.fixed += mlp(p + "mlp.");
      continue;
    }
    b.fixed += LinearBytes(ckpt, p + "mlp.gate");
    if (c.n_shared_experts > 0) b.fixed += mlp(p + "mlp.shared_experts.");
    if (b.per_expert == 0) b.per_expert = mlp(p + "mlp.experts.0.");
  }
  b.fixed += LinearBytes(ckpt, ckpt.Has("lm_head.weight") ? "lm_head" : "model.embed_tokens");
  return b;
}

struct Row {
  int64_t batch = 0;
  double prefill_s = 0, ms_per_step = 0, tokens_per_s = 0, gb_per_step = 0, floor_fraction = 0;
  double experts_per_layer = 0;
};

int Run(const Options& opt) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("skipped: no CUDA device\n");
    return 0;
  }
  auto backend = MakeBackend("cuda");
  if (!backend.ok()) {
    std::printf("skipped: no CUDA device (%s)\n", std::string(backend.status().message()).c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s, %.0f GiB\n", prop.name, prop.totalGlobalMem / 1073741824.0);

  std::string dir = opt.model_dir;
  bool remove_dir = false;
  if (dir.empty()) {
    auto preset = model::TinyModelPreset("bench-2b");
    auto params = model::TinyModelParameterCount(*preset);
    dir = testing::MakeTempDir("cuda-decode-bench");
    remove_dir = true;
    const auto t = Clock::now();
    if (absl::Status s = model::WriteTinyModel(*preset, dir); !s.ok()) {
      std::fprintf(stderr, "writing bench-2b: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::printf("model: bench-2b preset, %.2f B parameters, written in %.1f s\n",
                params.ok() ? *params / 1e9 : 0.0, Seconds(t));
  }
  auto ckpt = model::Checkpoint::Open(dir);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "%s\n", std::string(ckpt.status().message()).c_str());
    return 1;
  }
  const StepBytes bytes = DecodeStepBytes(**ckpt);
  const model::ModelConfig config = (*ckpt)->config();
  const auto t_load = Clock::now();
  auto model = model::DeepseekModel::Create(*std::move(ckpt), backend->get());
  if (!model.ok()) {
    std::fprintf(stderr, "load: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  std::printf("loaded and uploaded in %.1f s\n", Seconds(t_load));
  const double bandwidth = CopyBandwidth();
  std::printf("copy bandwidth: %.0f GB/s (device-to-device, read + write)\n", bandwidth / 1e9);

  int64_t moe_count = 0;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) moe_count += config.is_moe_layer(l);
  const int64_t kv_row_bytes = config.kv_cache_width() * int64_t{4};
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> token(2, static_cast<int32_t>(config.vocab_size - 1));
  std::vector<Row> rows;
  for (int64_t batch : opt.batches) {
    const int64_t block = 64, total = opt.context + opt.steps + 4;
    const int64_t per_seq = (total + block - 1) / block;
    auto cache =
        model::PagedKvCache::Create((*model)->CacheShape(batch * per_seq, block), backend->get());
    if (!cache.ok()) {
      std::fprintf(stderr, "cache: %s\n", std::string(cache.status().message()).c_str());
      return 1;
    }
    std::vector<std::vector<int32_t>> tables(batch), prompts(batch);
    for (int64_t s = 0; s < batch; ++s) {
      for (int64_t i = 0; i < per_seq; ++i)
        tables[s].push_back(static_cast<int32_t>(s * per_seq + i));
      for (int64_t i = 0; i < opt.context; ++i) prompts[s].push_back(token(rng));
    }
    // Prefill in groups of up to 16 sequences (bounded activation memory).
    Row row{.batch = batch};
    std::vector<int32_t> next(batch);
    auto t = Clock::now();
    for (int64_t first = 0; first < batch; first += 16) {
      std::vector<model::SequenceInput> inputs;
      for (int64_t s = first; s < std::min(batch, first + 16); ++s) {
        inputs.push_back({.token_ids = prompts[s], .start_pos = 0, .block_table = tables[s]});
      }
      auto out = (*model)->Forward(inputs, model::LogitsMode::kLastPerSequence, **cache);
      if (!out.ok()) {
        std::fprintf(stderr, "prefill: %s\n", std::string(out.status().message()).c_str());
        return 1;
      }
      for (size_t i = 0; i < inputs.size(); ++i) {
        auto logits = out->logits_row(static_cast<int64_t>(i));
        next[first + i] =
            static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
    }
    row.prefill_s = Seconds(t);
    // Decode: 3 warm-up steps, then the timed ones; greedy tokens fed back.
    int64_t pos = opt.context;
    double timed = 0, experts = 0, kv_bytes = 0;
    for (int64_t step = 0; step < opt.steps + 3; ++step) {
      std::vector<model::SequenceInput> inputs;
      for (int64_t s = 0; s < batch; ++s) {
        inputs.push_back({.token_ids = absl::MakeConstSpan(&next[s], 1),
                          .start_pos = pos,
                          .block_table = tables[s]});
      }
      t = Clock::now();
      auto out = (*model)->Forward(inputs, model::LogitsMode::kLastPerSequence, **cache);
      const double seconds = Seconds(t);
      if (!out.ok()) {
        std::fprintf(stderr, "decode: %s\n", std::string(out.status().message()).c_str());
        return 1;
      }
      for (int64_t s = 0; s < batch; ++s) {
        auto logits = out->logits_row(s);
        next[s] =
            static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
      ++pos;
      if (step < 3) continue;
      timed += seconds;
      experts += static_cast<double>((*model)->last_routed_experts_run());
      kv_bytes += static_cast<double>(batch * pos * config.num_hidden_layers * kv_row_bytes);
    }
    const double step_s = timed / opt.steps;
    const double step_bytes = static_cast<double>(bytes.fixed) +
                              (experts / opt.steps) * static_cast<double>(bytes.per_expert) +
                              kv_bytes / opt.steps;
    row.ms_per_step = step_s * 1e3;
    row.tokens_per_s = static_cast<double>(batch) / step_s;
    row.gb_per_step = step_bytes / 1e9;
    row.floor_fraction = bandwidth > 0 ? (step_bytes / bandwidth) / step_s : 0;
    row.experts_per_layer = moe_count ? experts / opt.steps / moe_count : 0;
    rows.push_back(row);
    std::printf("batch %lld: prefill %lld tokens in %.2f s, decode %.2f ms/step\n",
                static_cast<long long>(batch), static_cast<long long>(batch * opt.context),
                row.prefill_s, row.ms_per_step);
  }
  if (remove_dir) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  std::printf("=== cuda_decode_bench: %s, context %lld, %lld timed steps, copy %.0f GB/s\n",
              prop.name, static_cast<long long>(opt.context), static_cast<long long>(opt.steps),
              bandwidth / 1e9);
  std::printf("%6s %10s %10s %9s %13s %10s %9s %12s\n", "batch", "ms/step", "tokens/s", "GB/step",
              "experts/layer", "floor ms", "of floor", "prefill t/s");
  for (const Row& r : rows) {
    std::printf("%6lld %10.2f %10.0f %9.3f %13.1f %10.3f %8.1f%% %12.0f\n",
                static_cast<long long>(r.batch), r.ms_per_step, r.tokens_per_s, r.gb_per_step,
                r.experts_per_layer, bandwidth > 0 ? r.gb_per_step * 1e9 / bandwidth * 1e3 : 0,
                100 * r.floor_fraction,
                static_cast<double>(r.batch * opt.context) / std::max(r.prefill_s, 1e-9));
  }
  return 0;
}

}  // namespace
}  // namespace r2

int main(int argc, char** argv) {
  r2::Options options;
  if (!r2::ParseArgs(argc, argv, options)) {
    std::fprintf(stderr,
                 "usage: r2_cuda_decode_bench [--model DIR] [--steps N] [--context N] "
                 "[--batches 1,64]\n");
    return 2;
  }
  return r2::Run(options);
}
