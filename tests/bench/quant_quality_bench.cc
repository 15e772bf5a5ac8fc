// Quality of the integer weight formats against BF16, and of the bf16 / fp8 KV cache against the
// float32 cache (docs/perf/quantization.md).
//
// For each preset (tiny, small): writes the random-weight BF16 checkpoint with its tokenizer,
// converts it with QuantizeCheckpoint to int8 (W8A8) and int4 (W4A16, group 128) with the
// converter's defaults, and with its other choices (asymmetric int4, the dense MLPs quantized
// too, plain max-abs scales), and runs them all on the CPU backend over a fixed prompt set: every
// prompt position (prefill) plus eight greedy BF16 continuation tokens fed back one at a time
// (decode through the paged cache, the quantized models teacher-forced on the BF16 tokens). At
// every position it compares the next-token distributions: KL(p_bf16 || p_quant) (mean and p99,
// nats), top-1 agreement (and how many of the misses were near ties: BF16's top two logits within
// kNearTie), and the BF16 entropy (how flat the distributions are). Perplexity of each model on a
// fixed text.
//
//   build/<dir>/tests/r2_quant_quality_bench [--presets tiny,small] [--out FILE] [--no-write]
//                                             [--by-part] [--kv-only] [--model DIR --name NAME]
// --model runs an existing BF16 checkpoint directory (with its tokenizer.json) instead of the
// presets, under the label NAME (default: the directory's name), e.g. the trained checkpoint of
// tests/golden/train_tiny.py; its sections get their own markers (quant_quality_bench:NAME:...).
// --by-part adds int8 checkpoints quantized in one part only (attention, routed experts, shared
// experts, the dense MLP; --parts S1,S2,... instead: the tensors whose names contain S1, ...) to
// show where the divergence comes from, each also as "weights only" (--except S1,...: int8 with
// the tensors whose names contain S1 kept BF16, one variant each):
// the same int8 weights dequantized to F32 and run with float activations, which separates the
// weight rounding from W8A8's per-token activation rounding. The noise floor row runs the BF16
// weights on the reference backend (float rounding differences only).
//
// KV cache rows ("KV bf16", "KV fp8"; --kv-only runs just these): the BF16 weights with the
// cache in that format, against the same weights with the float32 cache. The plain prefill
// attends over the fresh float32 latents and never reads the cache, so these runs feed every
// prompt and text token one at a time: every position attends over cached rows. Their baseline
// ("KV float32, token by token") is the same feeding with the float32 cache; its own row (against
// the one-prefill BF16 run) is the float noise of the absorbed against the plain attention.
//
// Writes its section of FILE (default docs/perf/quantization.md in the source tree) between
// the quant_quality_bench markers, keeping the rest of the file.
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/kv_cache.h"
#include "engine/model/quantization.h"
#include "engine/model/quantize_checkpoint.h"
#include "engine/model/safetensors.h"
#include "engine/model/tiny_model.h"
#include "engine/tokenizer/tiny_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/backend.h"
#include "tests/unit/test_paths.h"

namespace r2 {
namespace {

using model::DeepseekModel;
using model::ForwardOutput;
using model::LogitsMode;
using model::SequenceInput;

constexpr int kDecodeSteps = 8;
// Section markers; "tag" is empty for the presets and "NAME:" for --model (its own sections).
std::string Marker(const std::string& tag, const char* what) {
  return absl::StrCat("<!-- quant_quality_bench:", tag, what, " -->");
}

const char* const kPrompts[] = {
    "The quick brown fox jumps over the lazy dog while the farmer watches from the hill.",
    "In 1905 Albert Einstein published four papers that changed physics forever.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +",
    "Translate to French: The weather is nice today and we are going to the beach.",
    "The mitochondria is the powerhouse of the cell because it produces",
    "Question: What is the capital of Australia? Answer:",
    "Once upon a time, in a kingdom far away, there lived a princess who",
    "SELECT name, count(*) FROM users JOIN orders ON users.id = orders.user_id GROUP BY",
};

const char kText[] =
    "Rivers carve valleys over millions of years, carrying sediment from the mountains to the "
    "sea. Where the current slows, sand and silt settle, building deltas that shift with every "
    "flood. Farmers have long settled on these fertile plains, planting rice, wheat and cotton, "
    "and the first cities grew beside the water. Engineers later built dams and canals to tame "
    "the floods, store water for dry seasons and turn turbines that light homes hundreds of "
    "miles away. Yet a river is never fully tamed: it remembers its old course, and in a wet "
    "year it may return to it.";

struct Positions {
  std::vector<std::vector<float>> logits;  // one next-token distribution per position
};

// Log-softmax in double.
std::vector<double> LogSoftmax(const std::vector<float>& logits) {
  double m = -1e300;
  for (float v : logits) m = std::max(m, double{v});
  double sum = 0.0;
  for (float v : logits) sum += std::exp(double{v} - m);
  const double log_z = m + std::log(sum);
  std::vector<double> r(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) r[i] = double{logits[i]} - log_z;
  return r;
}

int64_t ArgMax(const std::vector<float>& v) {
  return std::max_element(v.begin(), v.end()) - v.begin();
}

class Runner {
 public:
  // `through_cache`: feed prompts and text one token at a time (each position reads the cache).
  static absl::StatusOr<std::unique_ptr<Runner>> Load(
      const std::string& dir, const std::string& backend_name,
      KvCacheDType kv_dtype = KvCacheDType::kFloat32, bool through_cache = false) {
    auto r = std::make_unique<Runner>();
    auto backend = MakeBackend(backend_name);
    if (!backend.ok()) return backend.status();
    r->backend_ = *std::move(backend);
    auto m = DeepseekModel::Load(dir, r->backend_.get());
    if (!m.ok()) return m.status();
    r->model_ = *std::move(m);
    r->through_cache_ = through_cache;
    auto cache = model::PagedKvCache::Create(r->model_->CacheShape(8, 64, kv_dtype));
    if (!cache.ok()) return cache.status();
    r->cache_ = *std::move(cache);
    for (int32_t b = 0; b < 8; ++b) r->table_.push_back(b);
    return r;
  }

  // Prefill `prompt` (logits at every position), then feed `forced` one token at a time (decode);
  // when `forced` is empty, continues greedily for kDecodeSteps tokens and returns them there.
  absl::StatusOr<Positions> Run(const std::vector<int32_t>& prompt, std::vector<int32_t>& forced) {
    Positions out;
    if (absl::Status s = Prefill(prompt, out); !s.ok()) return s;
    const bool greedy = forced.empty();
    for (int step = 0; step < kDecodeSteps; ++step) {
      if (greedy) forced.push_back(static_cast<int32_t>(ArgMax(out.logits.back())));
      const int32_t token = forced[step];
      SequenceInput next{.token_ids = {&token, 1},
                         .start_pos = static_cast<int64_t>(prompt.size()) + step,
                         .block_table = table_};
      auto decode = model_->Forward({&next, 1}, LogitsMode::kLastPerSequence, *cache_);
      if (!decode.ok()) return decode.status();
      Append(*decode, out);
    }
    return out;
  }

  // Mean negative log-likelihood of each next token of `text` (one prefill).
  absl::StatusOr<double> MeanNll(const std::vector<int32_t>& text) {
    Positions all;
    if (absl::Status s = Prefill(text, all); !s.ok()) return s;
    double nll = 0.0;
    for (size_t i = 0; i + 1 < text.size(); ++i) {
      nll -= LogSoftmax(all.logits[i])[text[i + 1]];
    }
    return nll / static_cast<double>(text.size() - 1);
  }

 private:
  // Logits at every position of `ids` from position 0: one prefill, or one step per token.
  absl::Status Prefill(const std::vector<int32_t>& ids, Positions& out) {
    if (!through_cache_) {
      SequenceInput seq{.token_ids = ids, .start_pos = 0, .block_table = table_};
      auto f = model_->Forward({&seq, 1}, LogitsMode::kAll, *cache_);
      if (!f.ok()) return f.status();
      Append(*f, out);
      return absl::OkStatus();
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      SequenceInput seq{
          .token_ids = {&ids[i], 1}, .start_pos = static_cast<int64_t>(i), .block_table = table_};
      auto f = model_->Forward({&seq, 1}, LogitsMode::kLastPerSequence, *cache_);
      if (!f.ok()) return f.status();
      Append(*f, out);
    }
    return absl::OkStatus();
  }

  static void Append(const ForwardOutput& f, Positions& out) {
    for (int64_t i = 0; i < f.logit_rows(); ++i) {
      auto row = f.logits_row(i);
      out.logits.emplace_back(row.begin(), row.end());
    }
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<DeepseekModel> model_;
  std::unique_ptr<model::PagedKvCache> cache_;
  std::vector<int32_t> table_;
  bool through_cache_ = false;
};

struct Comparison {
  std::string preset, format, baseline;
  int64_t positions = 0;
  double mean_kl = 0, p99_kl = 0, top1 = 0, mean_entropy = 0, ppl = 0, ppl_bf16 = 0;
  double logit_err = 0;  // RMS(logits_quant - logits_bf16) / RMS(logits_bf16)
  // Positions whose top-1 token differs, and those of them where the baseline's top two logits
  // were within kNearTie (near ties that almost any perturbation flips).
  int64_t misses = 0, near_tie_misses = 0;
  double seconds = 0;
  double bytes = 0, bytes_bf16 = 0;
  int64_t kv_bytes = 0, kv_bytes_f32 = 0;  // KV rows: cache bytes per token (format / float32)
};

constexpr double kNearTie = 0.01;

Comparison Compare(const std::vector<Positions>& ref, const std::vector<Positions>& quant) {
  Comparison c;
  std::vector<double> kls;
  int64_t agree = 0;
  double entropy = 0.0, sq_diff = 0.0, sq_ref = 0.0;
  for (size_t p = 0; p < ref.size(); ++p) {
    for (size_t i = 0; i < ref[p].logits.size(); ++i) {
      for (size_t v = 0; v < ref[p].logits[i].size(); ++v) {
        const double d = double{quant[p].logits[i][v]} - ref[p].logits[i][v];
        sq_diff += d * d;
        sq_ref += double{ref[p].logits[i][v]} * ref[p].logits[i][v];
      }
      const std::vector<double> lp = LogSoftmax(ref[p].logits[i]);
      const std::vector<double> lq = LogSoftmax(quant[p].logits[i]);
      double kl = 0.0, h = 0.0;
      for (size_t v = 0; v < lp.size(); ++v) {
        const double pv = std::exp(lp[v]);
        kl += pv * (lp[v] - lq[v]);
        h -= pv * lp[v];
      }
      kls.push_back(std::max(kl, 0.0));
      entropy += h;
      const int64_t a = ArgMax(ref[p].logits[i]), b = ArgMax(quant[p].logits[i]);
      agree += a == b;
      if (a != b) {
        ++c.misses;
        c.near_tie_misses += ref[p].logits[i][a] - ref[p].logits[i][b] < kNearTie;
      }
    }
  }
  c.positions = static_cast<int64_t>(kls.size());
  double sum = 0.0;
  for (double k : kls) sum += k;
  c.mean_kl = sum / kls.size();
  std::sort(kls.begin(), kls.end());
  c.p99_kl = kls[std::min(kls.size() - 1, static_cast<size_t>(0.99 * kls.size()))];
  c.top1 = static_cast<double>(agree) / kls.size();
  c.mean_entropy = entropy / kls.size();
  c.logit_err = std::sqrt(sq_diff / sq_ref);
  return c;
}

double DirBytes(const std::string& dir) {
  double total = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") total += static_cast<double>(e.file_size());
  }
  return total;
}

// A copy of the BF16 checkpoint whose linear weights (those the converter would quantize) differ
// by one BF16 ulp in about half of their elements (the lowest mantissa bit flipped, chosen by a
// hash of the tensor name and index): the size of a different rounding of the same float
// weights, a perturbation far smaller than int8's. Its divergence is the floor any weight format
// can reach on these random-weight models.
absl::Status WriteUlpPerturbed(const std::string& src, const std::string& dst) {
  std::filesystem::create_directories(dst);
  for (const auto& e : std::filesystem::directory_iterator(src)) {
    if (e.path().extension() != ".safetensors") {
      std::filesystem::copy_file(e.path(), dst + "/" + e.path().filename().string(),
                                 std::filesystem::copy_options::overwrite_existing);
      continue;
    }
    auto file = model::SafetensorsFile::Open(e.path().string());
    if (!file.ok()) return file.status();
    model::SafetensorsWriter writer;
    for (const auto& [name, entry] : (*file)->entries()) {
      auto view = (*file)->Get(name);
      if (!view.ok()) return view.status();
      const auto* data = static_cast<const uint8_t*>(view->data);
      std::vector<uint8_t> bytes(data, data + (entry.end - entry.begin));
      const bool linear = entry.dtype == DType::kBF16 && entry.shape.size() == 2 &&
                          name.find("_proj.weight") != std::string::npos &&
                          name.find("eh_proj") == std::string::npos;
      if (linear) {
        uint64_t h = std::hash<std::string>{}(name);
        for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
          h = h * 6364136223846793005ull + 1442695040888963407ull;
          if ((h >> 63) != 0) bytes[i] ^= 1;  // little-endian: low byte holds the last bit
        }
      }
      writer.Add(name, entry.dtype, entry.shape, std::move(bytes));
    }
    if (absl::Status s = writer.Write(dst + "/" + e.path().filename().string()); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// A copy of the BF16 checkpoint `src` whose linear weights that `quantized` stores as integers
// are replaced by their dequantized values in F32: the quantized weights with float activations
// (for int8, the weight rounding of W8A8 without its per-token activation rounding).
absl::Status WriteDequantized(const std::string& src, const std::string& quantized,
                              const std::string& dst) {
  auto q = model::Checkpoint::Open(quantized);
  if (!q.ok()) return q.status();
  std::filesystem::create_directories(dst);
  for (const auto& e : std::filesystem::directory_iterator(src)) {
    if (e.path().extension() != ".safetensors") {
      std::filesystem::copy_file(e.path(), dst + "/" + e.path().filename().string(),
                                 std::filesystem::copy_options::overwrite_existing);
      continue;
    }
    auto file = model::SafetensorsFile::Open(e.path().string());
    if (!file.ok()) return file.status();
    model::SafetensorsWriter writer;
    for (const auto& [name, entry] : (*file)->entries()) {
      if (model::StoredAsIntegerWeight(**q, name)) {
        auto w = (*q)->Linear(name);
        if (!w.ok()) return w.status();
        auto f = model::DequantizeIntegerToFloat(*w);
        if (!f.ok()) return f.status();
        std::vector<uint8_t> bytes(f->size() * sizeof(float));
        std::memcpy(bytes.data(), f->data(), bytes.size());
        writer.Add(name, DType::kF32, entry.shape, std::move(bytes));
        continue;
      }
      auto view = (*file)->Get(name);
      if (!view.ok()) return view.status();
      const auto* data = static_cast<const uint8_t*>(view->data);
      writer.Add(name, entry.dtype, entry.shape,
                 std::vector<uint8_t>(data, data + (entry.end - entry.begin)));
    }
    if (absl::Status s = writer.Write(dst + "/" + e.path().filename().string()); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// `model_dir` empty: writes the random-weight checkpoint of `preset`; else runs that BF16
// checkpoint directory under the label `preset`.
absl::Status RunPreset(const std::string& preset, const std::string& model_dir, bool by_part,
                       const std::vector<std::string>& parts,
                       const std::vector<std::string>& excepts, bool kv_only,
                       std::vector<Comparison>& results, std::string& notes) {
  const std::string root = testing::MakeTempDir("quant_quality_" + preset);
  std::string bf16 = root + "/bf16";
  model::ModelConfig config;
  if (model_dir.empty()) {
    auto options = model::TinyModelPreset(preset);
    if (!options.ok()) return options.status();
    std::fprintf(stderr, "%s: writing the bf16 checkpoint\n", preset.c_str());
    if (absl::Status s = tokenizer::WriteTinyModelWithTokenizer(*options, bf16); !s.ok()) {
      return s;
    }
  } else {
    bf16 = model_dir;
  }
  auto loaded = model::LoadModelConfig(bf16);
  if (!loaded.ok()) return loaded.status();
  config = *loaded;
  struct Variant {
    std::string name, dir, backend = "cpu";
    KvCacheDType kv = KvCacheDType::kFloat32;
    bool through_cache = false;
    size_t baseline = 0;  // the variant compared against
  };
  std::vector<Variant> variants = {{"bf16", bf16}};
  // The noise floor: the same BF16 weights on the reference backend (float rounding only).
  if (!kv_only) variants.push_back({"bf16 (cpu-reference)", bf16, "cpu-reference"});
  // The weight-noise floor: BF16 weights one ulp off.
  if (!kv_only) {
    if (absl::Status s = WriteUlpPerturbed(bf16, root + "/bf16-ulp"); !s.ok()) return s;
    variants.push_back({"bf16 +-1 ulp", root + "/bf16-ulp"});
  }
  // The KV cache formats, every position read through the cache (see the top of the file).
  const size_t kv_f32 = variants.size();
  variants.push_back({"KV float32, token by token", bf16, "cpu", KvCacheDType::kFloat32, true});
  variants.push_back({"KV bf16", bf16, "cpu", KvCacheDType::kBF16, true, kv_f32});
  variants.push_back({"KV fp8", bf16, "cpu", KvCacheDType::kFp8E4M3, true, kv_f32});
  // The converter's defaults ("int8": max-abs scales, o_proj BF16; "int4": searched scales; dense
  // MLPs BF16; the o_proj rows: int8 with o_proj quantized, plain and smoothed, int4 without),
  // then the other choices it offers: asymmetric int4, the other scale choice, the dense MLPs
  // quantized too (with both scale choices: "int8, dense MLP quantized" and "int4, dense MLP
  // quantized, max-abs scales" are what the converter did before either change).
  struct Converted {
    const char* name;
    model::QuantFormat format;
    bool symmetric = true, dense_mlp = false;
    model::ScaleChoice scales = model::ScaleChoice::kAuto;
    model::AttentionOutput o_proj = model::AttentionOutput::kAuto;
    bool smooth = false;
  };
  constexpr auto kOProjInt = model::AttentionOutput::kQuantize;
  constexpr auto kOProjBF16 = model::AttentionOutput::kBF16;
  constexpr auto kInt8 = model::QuantFormat::kInt8;
  constexpr auto kInt4 = model::QuantFormat::kInt4;
  constexpr auto kMse = model::ScaleChoice::kMinSquaredError;
  constexpr auto kMaxAbs = model::ScaleChoice::kMaxAbs;
  for (const Converted& c :
       {Converted{"int8", kInt8}, Converted{"int4", kInt4},
        Converted{"int4 asymmetric", kInt4, false},
        Converted{"int8, searched scales", kInt8, true, false, kMse},
        Converted{"int4, max-abs scales", kInt4, true, false, kMaxAbs},
        Converted{"int8, dense MLP quantized", kInt8, true, true},
        Converted{"int8, dense MLP quantized, searched scales", kInt8, true, true, kMse},
        Converted{"int4, dense MLP quantized", kInt4, true, true},
        Converted{"int4, dense MLP quantized, max-abs scales", kInt4, true, true, kMaxAbs},
        Converted{"int8, o_proj quantized", kInt8, true, false, kMaxAbs, kOProjInt},
        Converted{"int8, o_proj quantized, smoothed", kInt8, true, false, kMaxAbs, kOProjInt, true},
        Converted{"int4, o_proj BF16", kInt4, true, false, model::ScaleChoice::kAuto,
                  kOProjBF16}}) {
    if (kv_only) break;
    const std::string name = c.name;
    model::QuantizeOptions q;
    q.format = c.format;
    q.symmetric = c.symmetric;
    q.quantize_dense_mlp = c.dense_mlp;
    q.scales = c.scales;
    q.attention_output = c.o_proj;
    q.smooth_attention_output = c.smooth;
    std::string dir = root + "/" + name;
    for (char& ch : dir) {
      if (ch == ' ' || ch == ',') ch = '_';
    }
    auto summary = model::QuantizeCheckpoint(bf16, dir, q);
    if (!summary.ok()) return summary.status();
    variants.push_back({name, dir});
  }
  if (by_part) {  // int8 on one part of the model at a time: where the divergence comes from
    for (const std::string& part : parts) {
      model::QuantizeOptions q;
      q.format = model::QuantFormat::kInt8;
      q.quantize_dense_mlp = true;
      q.attention_output = model::AttentionOutput::kQuantize;  // "only X" quantizes all of X
      q.filter = [part](const std::string& t) { return t.find(part) != std::string::npos; };
      const std::string dir = root + "/int8-" + part;
      auto summary = model::QuantizeCheckpoint(bf16, dir, q);
      if (!summary.ok()) return summary.status();
      variants.push_back({"int8, only " + part + "*", dir});
      // The same int8 weights with float activations: weight rounding alone.
      if (absl::Status s = WriteDequantized(bf16, dir, dir + "-w"); !s.ok()) return s;
      variants.push_back({"int8 weights only (f32 activations), only " + part + "*", dir + "-w"});
    }
    if (absl::Status s = WriteDequantized(bf16, root + "/int8", root + "/int8-w"); !s.ok()) {
      return s;
    }
    variants.push_back({"int8 weights only (f32 activations)", root + "/int8-w"});
  }
  // The converter's int8 defaults with the tensors whose names contain one substring kept BF16.
  for (size_t i = 0; i < excepts.size() && !kv_only; ++i) {
    model::QuantizeOptions q;
    q.format = model::QuantFormat::kInt8;
    const std::string part = excepts[i];
    q.filter = [part](const std::string& t) { return t.find(part) == std::string::npos; };
    const std::string dir = absl::StrCat(root, "/int8-except-", i);
    auto summary = model::QuantizeCheckpoint(bf16, dir, q);
    if (!summary.ok()) return summary.status();
    variants.push_back({"int8, " + part + "* kept BF16", dir});
  }
  auto tok = tokenizer::Tokenizer::FromFile(bf16 + "/tokenizer.json");
  if (!tok.ok()) return tok.status();
  std::vector<std::vector<int32_t>> prompts;
  for (const char* p : kPrompts) {
    auto ids = (*tok)->Encode(p, /*add_special_tokens=*/true);
    if (!ids.ok()) return ids.status();
    prompts.push_back(*ids);
  }
  auto text = (*tok)->Encode(kText, true);
  if (!text.ok()) return text.status();

  std::vector<std::vector<Positions>> runs(variants.size());
  std::vector<std::vector<int32_t>> continuations(prompts.size());
  std::vector<double> nll(variants.size()), seconds(variants.size());
  for (size_t v = 0; v < variants.size(); ++v) {
    std::fprintf(stderr, "%s: running %s\n", preset.c_str(), variants[v].name.c_str());
    const auto start = std::chrono::steady_clock::now();
    auto runner = Runner::Load(variants[v].dir, variants[v].backend, variants[v].kv,
                               variants[v].through_cache);
    if (!runner.ok()) return runner.status();
    for (size_t p = 0; p < prompts.size(); ++p) {
      auto r = (*runner)->Run(prompts[p], continuations[p]);  // v == 0 fills continuations
      if (!r.ok()) return r.status();
      runs[v].push_back(*std::move(r));
    }
    auto n = (*runner)->MeanNll(*text);
    if (!n.ok()) return n.status();
    nll[v] = *n;
    seconds[v] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  for (size_t v = 1; v < variants.size(); ++v) {
    const size_t base = variants[v].baseline;
    Comparison c = Compare(runs[base], runs[v]);
    c.preset = preset;
    c.format = variants[v].name;
    c.baseline = variants[base].name;
    c.ppl = std::exp(nll[v]);
    c.ppl_bf16 = std::exp(nll[base]);
    c.seconds = seconds[v];
    c.bytes = DirBytes(variants[v].dir);
    c.bytes_bf16 = DirBytes(bf16);
    if (variants[v].through_cache) {  // KV rows: bytes of one token's cache rows, all layers
      const int64_t layers = config.num_hidden_layers + config.num_nextn_predict_layers;
      c.kv_bytes =
          layers * KvCacheRowBytes(variants[v].kv, config.kv_lora_rank, config.qk_rope_head_dim);
      c.kv_bytes_f32 = layers * KvCacheRowBytes(KvCacheDType::kFloat32, config.kv_lora_rank,
                                                config.qk_rope_head_dim);
    }
    results.push_back(c);
  }
  absl::StrAppendFormat(&notes,
                        "- %s: %d prompts, %d prompt tokens + %d decode steps each; text %d "
                        "tokens; vocab %d (uniform entropy ln V = %.2f nats); bf16 run %.1f s\n",
                        preset, static_cast<int>(prompts.size()),
                        static_cast<int>(prompts[0].size()), kDecodeSteps,
                        static_cast<int>(text->size()), static_cast<int>(config.vocab_size),
                        std::log(static_cast<double>(config.vocab_size)), seconds[0]);
  std::filesystem::remove_all(root);
  return absl::OkStatus();
}

std::string Machine() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return absl::StrCat(model, ", ", sysconf(_SC_NPROCESSORS_ONLN), " cores");
}

bool IsKvRow(const Comparison& c) { return c.format.rfind("KV ", 0) == 0; }

std::string Date() {
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  return date;
}

// The weight-format section (empty when no weight format ran).
std::string Report(const std::vector<Comparison>& results, const std::string& notes,
                   const std::string& command, const std::string& tag, const std::string& what) {
  if (std::none_of(results.begin(), results.end(),
                   [](const Comparison& c) { return !IsKvRow(c); })) {
    return "";
  }
  std::string s = absl::StrCat(Marker(tag, "begin"), "\n## Quality against BF16 (", what, ")\n\n",
                               "Measured ", Date(), " on ", Machine(),
                               ", CPU backend (\"cpu\"; integer weights run its optimized "
                               "quantized Linear, kernels/cpu/opt_quant*). Command: `",
                               command, "`.\n\n");
  s += "| preset | format | positions | mean KL (nats) | p99 KL | top-1 agreement | "
       "top-1 misses (near ties) | logit RMS err | mean bf16 entropy | ppl (quant / bf16) | "
       "weights (GB, quant / bf16) | goal met |\n";
  s += "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Comparison& c : results) {
    if (IsKvRow(c)) continue;
    const bool int8 = c.format == "int8";
    const bool met =
        int8 ? (c.top1 >= 0.99 && c.mean_kl < 1e-3) : (c.top1 >= 0.95 && c.mean_kl < 2e-2);
    const bool goal = c.format == "int8" || c.format == "int4";
    absl::StrAppendFormat(
        &s,
        "| %s | %s | %d | %.2e | %.2e | %.2f%% | %d (%d) | %.2e | %.2f | %.4g / %.4g | "
        "%.3f / %.3f | %s |\n",
        c.preset, c.format, static_cast<int>(c.positions), c.mean_kl, c.p99_kl, 100 * c.top1,
        static_cast<int>(c.misses), static_cast<int>(c.near_tie_misses), c.logit_err,
        c.mean_entropy, c.ppl, c.ppl_bf16, c.bytes / 1e9, c.bytes_bf16 / 1e9,
        !goal ? "-"
              : absl::StrCat(met ? "yes" : "NO", " (top-1 >= ", int8 ? "99%" : "95%", ", KL < ",
                             int8 ? "1e-3" : "2e-2", ")"));
  }
  s += "\n" + notes + Marker(tag, "end") + "\n";
  return s;
}

// The KV cache section: each format against the float32 cache, every position through the cache.
std::string KvReport(const std::vector<Comparison>& results, const std::string& notes,
                     const std::string& command, const std::string& tag, const std::string& what) {
  std::string s = absl::StrCat(
      Marker(tag, "kv:begin"), "\n## KV cache formats against the float32 cache (", what, ")\n\n",
      "Measured ", Date(), " on ", Machine(),
      ", CPU backend (\"cpu\"), BF16 weights. Every prompt and text token is fed one at a time, "
      "so each position attends over cached rows (the plain prefill never reads the cache). "
      "Command: `",
      command, "`.\n\n");
  s += "| preset | KV cache | against | positions | mean KL (nats) | p99 KL | top-1 agreement | "
       "logit RMS err | ppl (this / against) | KV bytes per token (this / float32) | tokens "
       "per budget |\n";
  s += "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Comparison& c : results) {
    if (!IsKvRow(c)) continue;
    const bool kv = c.kv_bytes > 0 && c.format != "KV float32, token by token";
    absl::StrAppendFormat(
        &s, "| %s | %s | %s | %d | %.2e | %.2e | %.2f%% | %.2e | %.4g / %.4g | %s | %s |\n",
        c.preset, c.format, c.baseline, static_cast<int>(c.positions), c.mean_kl, c.p99_kl,
        100 * c.top1, c.logit_err, c.ppl, c.ppl_bf16,
        kv ? absl::StrCat(c.kv_bytes, " / ", c.kv_bytes_f32) : "-",
        kv ? absl::StrFormat("%.2fx", double(c.kv_bytes_f32) / c.kv_bytes) : "-");
  }
  s += "\n" + notes + Marker(tag, "kv:end") + "\n";
  return s;
}

// Replaces the text between `begin` and `end` in `path` with `section` (appends it when absent).
absl::Status WriteSection(const std::string& path, const std::string& section,
                          const std::string& begin, const std::string& end) {
  std::string old;
  if (std::ifstream in(path); in) {
    std::ostringstream text;
    text << in.rdbuf();
    old = text.str();
  }
  std::string updated;
  const size_t b = old.find(begin), e = old.find(end);
  if (b != std::string::npos && e != std::string::npos && e > b) {
    updated = old.substr(0, b) + section + old.substr(e + end.size() + 1);
  } else {
    updated = old.empty() ? "# Quantization: measured quality and memory\n\n" + section
                          : old + "\n" + section;
  }
  std::ofstream out(path, std::ios::trunc);
  out << updated;
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  std::vector<std::string> presets = {"tiny", "small"};
  std::string out = testing::SourceDir() + "/docs/perf/quantization.md";
  bool write = true, by_part = false, kv_only = false;
  std::vector<std::string> excepts;
  std::vector<std::string> parts = {"self_attn.", "mlp.experts.", "mlp.shared_experts.",
                                    "layers.0.mlp."};
  std::string command = "r2_quant_quality_bench";
  std::string model_dir, name;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    command += " " + a;
    if (a == "--presets" && i + 1 < argc) {
      presets = absl::StrSplit(argv[++i], ',');
      command += std::string(" ") + argv[i];
    } else if (a == "--out" && i + 1 < argc) {
      out = argv[++i];
      command += std::string(" ") + argv[i];
    } else if (a == "--model" && i + 1 < argc) {
      model_dir = argv[++i];
      command += std::string(" ") + argv[i];
    } else if (a == "--name" && i + 1 < argc) {
      name = argv[++i];
      command += std::string(" ") + argv[i];
    } else if (a == "--no-write") {
      write = false;
    } else if (a == "--by-part") {
      by_part = true;
    } else if (a == "--parts" && i + 1 < argc) {
      by_part = true;
      parts = absl::StrSplit(argv[++i], ',', absl::SkipEmpty());
      command += std::string(" ") + argv[i];
    } else if (a == "--except" && i + 1 < argc) {
      excepts = absl::StrSplit(argv[++i], ',', absl::SkipEmpty());
      command += std::string(" ") + argv[i];
    } else if (a == "--kv-only") {
      kv_only = true;
    } else {
      std::fprintf(
          stderr,
          "usage: %s [--presets tiny,small] [--out FILE] [--no-write] [--by-part] "
          "[--parts SUBSTR,...] [--except SUBSTR,...] [--kv-only] [--model DIR [--name NAME]]\n",
          argv[0]);
      return 2;
    }
  }
  std::string tag, what = "random-weight presets";
  if (!model_dir.empty()) {
    if (name.empty()) name = std::filesystem::path(model_dir).lexically_normal().filename();
    const bool valid =
        !name.empty() && name[0] != '-' && std::all_of(name.begin(), name.end(), [](char ch) {
          return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' ||
                 ch == '.';
        });
    if (!valid) {
      std::fprintf(stderr, "--name %s: use letters, digits, '-', '_' or '.'\n", name.c_str());
      return 2;
    }
    presets = {name};
    tag = name + ":";
    what = absl::StrCat("checkpoint ", name);
  }
  std::vector<Comparison> results;
  std::string notes;
  for (const std::string& preset : presets) {
    if (absl::Status s =
            RunPreset(preset, model_dir, by_part, parts, excepts, kv_only, results, notes);
        !s.ok()) {
      std::fprintf(stderr, "%s: %s\n", preset.c_str(), std::string(s.message()).c_str());
      return 1;
    }
  }
  const std::string report = Report(results, notes, command, tag, what);
  const std::string kv_report = KvReport(results, notes, command, tag, what);
  std::printf("%s%s", report.c_str(), kv_report.c_str());
  if (write) {
    for (auto [section, begin, end] :
         {std::tuple{&report, Marker(tag, "begin"), Marker(tag, "end")},
          std::tuple{&kv_report, Marker(tag, "kv:begin"), Marker(tag, "kv:end")}}) {
      if (section->empty()) continue;
      if (absl::Status s = WriteSection(out, *section, begin, end); !s.ok()) {
        std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
        return 1;
      }
    }
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace r2

int main(int argc, char** argv) { return r2::Main(argc, argv); }
