// r2serve quantize: converts a BF16 or FP8 checkpoint into a compressed-tensors int8 (W8A8) or
// int4 (W4A16) checkpoint, streaming tensor by tensor. See engine/model/quantize_checkpoint.h and
// docs/quantization.md.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "engine/model/quantize_checkpoint.h"
#include "server/command.h"
#include "server/command_flags.h"

ABSL_DECLARE_FLAG(std::string, out);  // defined in cmd_make_tiny_model.cc
ABSL_FLAG(std::string, in, "", "Input checkpoint directory (BF16/F16/F32 or FP8). Required.");
ABSL_FLAG(std::string, format, "", "int8 (W8A8, per-channel) or int4 (W4A16, groups). Required.");
ABSL_FLAG(int64_t, group_size, 128, "int4: input columns per scale.");
ABSL_FLAG(bool, asymmetric, false, "int4: write zero points (asymmetric groups).");
ABSL_FLAG(bool, quantize_lm_head, false, "Quantize lm_head too (kept BF16 by default).");
ABSL_FLAG(bool, quantize_dense_mlp, false,
          "Quantize the dense MLPs of the first first_k_dense_replace layers too (kept BF16 by "
          "default and listed in the config's ignore list).");
ABSL_FLAG(int32_t, quantize_threads, 0,
          "Threads that quantize the rows of a tensor (0: one per core). On a machine shared "
          "with other work, fewer threads than cores avoid waiting on descheduled ones.");
ABSL_FLAG(std::string, scales, "auto",
          "How each int8 row's / int4 group's scale is chosen: mse (least squared rounding "
          "error), max-abs (max |w| spans the range), auto (mse for int4, max-abs for int8).");
ABSL_FLAG(std::string, attention_output, "auto",
          "The attention output projections (self_attn.o_proj): bf16 (kept BF16 and listed in "
          "the ignore list), quantize, or auto (bf16 for int8, quantize for int4).");
ABSL_FLAG(bool, smooth_attention_output, false,
          "int8 with --attention-output=quantize: rescale each value channel between kv_b_proj's "
          "row and o_proj's column before quantizing (exact; off by default).");

namespace r2::server {
namespace {

// A one-line progress bar on stderr, redrawn at most ten times a second.
class ProgressBar {
 public:
  void Update(int64_t done, int64_t total, const std::string& tensor) {
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double f = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(f * kWidth);
    std::string bar(filled, '#');
    bar.append(kWidth - filled, '-');
    std::string name = tensor.size() > 48 ? "..." + tensor.substr(tensor.size() - 45) : tensor;
    std::fprintf(stderr, "\r[%s] %3d%% %7.2f / %.2f GB  %-48s", bar.c_str(),
                 static_cast<int>(f * 100), done / 1e9, total / 1e9, name.c_str());
    std::fflush(stderr);
  }
  void Finish() { std::fprintf(stderr, "\n"); }

 private:
  std::chrono::steady_clock::time_point last_{};
};

// Looks `value` up among `choices` ({spelling, enum value}); on a miss prints
// "quantize: --FLAG must be A, B or C, got 'value'" and returns false.
template <typename E>
bool ParseChoice(const char* flag, const std::string& value,
                 std::initializer_list<std::pair<const char*, E>> choices, E* out) {
  std::string names;
  size_t i = 0;
  for (const auto& [name, choice] : choices) {
    if (value == name) {
      *out = choice;
      return true;
    }
    names += i == 0 ? "" : (i + 1 == choices.size() ? " or " : ", ");
    names += name;
    ++i;
  }
  std::fprintf(stderr, "quantize: --%s must be %s, got '%s'\n", flag, names.c_str(), value.c_str());
  return false;
}

int RunQuantize(int argc, char** argv) {
  constexpr absl::string_view kUsage =
      "r2serve quantize --in DIR --out DIR --format int8|int4 [--group-size 128] [--asymmetric]\n"
      "  [--quantize-lm-head] [--quantize-dense-mlp] [--scales auto|max-abs|mse] "
      "[--quantize-threads N]\n"
      "  [--attention-output auto|bf16|quantize] [--smooth-attention-output]\n"
      "Converts a BF16 or FP8 DeepSeek checkpoint into compressed-tensors integer weights:\n"
      "int8 = \"int-quantized\" W8A8 (per-channel weight scales, per-token activations at run\n"
      "time), int4 = \"pack-quantized\" W4A16 (groups of --group-size columns). Embeddings, "
      "norms,\n"
      "the MoE router, MTP eh_proj, the dense (first_k_dense_replace) MLPs and lm_head stay BF16,\n"
      "and for int8 the attention output projections (o_proj) too.\n"
      "Each int4 group's scale is chosen to minimize its squared rounding error (--scales).\n"
      "Streams tensor by tensor (bounded memory) and copies the tokenizer files.\n"
      "--out DIR: output directory (required).";
  if (WantsHelp(argc, argv)) return PrintFlagHelp(kUsage, "cmd_quantize");
  std::vector<std::string> positional = ParseCommandFlags(argc, argv);
  if (!positional.empty()) {
    std::fprintf(stderr, "quantize: unexpected argument '%s' (see --help)\n",
                 positional[0].c_str());
    return 1;
  }
  const std::string in = absl::GetFlag(FLAGS_in), out = absl::GetFlag(FLAGS_out);
  if (in.empty() || out.empty()) {
    std::fprintf(stderr, "quantize: --in DIR and --out DIR are required (see --help)\n");
    return 1;
  }
  model::QuantizeOptions options;
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "int8") {
    options.format = model::QuantFormat::kInt8;
  } else if (format == "int4") {
    options.format = model::QuantFormat::kInt4;
  } else {
    std::fprintf(stderr, "quantize: --format must be int8 or int4, got '%s'\n", format.c_str());
    return 1;
  }
  options.group_size = absl::GetFlag(FLAGS_group_size);
  options.symmetric = !absl::GetFlag(FLAGS_asymmetric);
  options.quantize_lm_head = absl::GetFlag(FLAGS_quantize_lm_head);
  options.quantize_dense_mlp = absl::GetFlag(FLAGS_quantize_dense_mlp);
  if (!ParseChoice<model::ScaleChoice>("scales", absl::GetFlag(FLAGS_scales),
                                       {{"auto", model::ScaleChoice::kAuto},
                                        {"max-abs", model::ScaleChoice::kMaxAbs},
                                        {"mse", model::ScaleChoice::kMinSquaredError}},
                                       &options.scales) ||
      !ParseChoice<model::AttentionOutput>("attention-output",
                                           absl::GetFlag(FLAGS_attention_output),
                                           {{"auto", model::AttentionOutput::kAuto},
                                            {"bf16", model::AttentionOutput::kBF16},
                                            {"quantize", model::AttentionOutput::kQuantize}},
                                           &options.attention_output)) {
    return 1;
  }
  options.smooth_attention_output = absl::GetFlag(FLAGS_smooth_attention_output);
  options.threads = absl::GetFlag(FLAGS_quantize_threads);
  if (options.threads < 0) {
    std::fprintf(stderr, "quantize: --quantize-threads must be 0 (one per core) or more, got %d\n",
                 options.threads);
    return 1;
  }
  ProgressBar bar;
  const bool tty = isatty(fileno(stderr)) != 0;
  if (tty) {
    options.progress = [&bar](int64_t done, int64_t total, const std::string& tensor) {
      bar.Update(done, total, tensor);
    };
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<model::QuantizeSummary> summary = model::QuantizeCheckpoint(in, out, options);
  if (tty) bar.Finish();
  if (!summary.ok()) {
    std::fprintf(stderr, "quantize: %s\n", std::string(summary.status().message()).c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "quantize: %s: %lld linear weights quantized, %lld tensors kept; %.3f GB -> %.3f GB in "
      "%.1f s; wrote %s\n",
      format.c_str(), static_cast<long long>(summary->quantized_tensors),
      static_cast<long long>(summary->kept_tensors), summary->input_bytes / 1e9,
      summary->output_bytes / 1e9, seconds, out.c_str());
  return 0;
}

}  // namespace

R2_REGISTER_COMMAND("quantize", "convert a BF16/FP8 checkpoint to int8 (W8A8) or int4 (W4A16)",
                    RunQuantize);

}  // namespace r2::server
