// r2serve make-tiny-model: writes a random-weight DeepSeek-V3 checkpoint (HF layout) for tests and
// benchmarks. See engine/model/tiny_model.h for what is written and the presets.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/tiny_model.h"
#include "engine/tokenizer/tiny_tokenizer.h"
#include "server/command.h"
#include "server/command_flags.h"

// Defined at global scope so that other subcommands can share them with ABSL_DECLARE_FLAG.
ABSL_FLAG(std::string, out, "", "Output directory (created if needed). Required.");
ABSL_FLAG(uint64_t, seed, 0, "Random seed; the same seed writes the same bytes on every machine.");
ABSL_FLAG(std::string, dtype, "",
          "Weight format: bf16 or fp8 (128x128 block scales). "
          "Default: the preset's.");

ABSL_FLAG(std::string, preset, "tiny", "Preset: tiny, tiny-noqlora, tiny-fp8 or small.");
ABSL_FLAG(int32_t, shards, 0,
          "Number of safetensors shards (1: model.safetensors; more: "
          "model-0000k-of-0000N.safetensors + index). 0: the preset's.");
ABSL_FLAG(int64_t, mtp_layers, -1, "num_nextn_predict_layers (MTP modules). -1: the preset's.");
ABSL_FLAG(int64_t, q_lora_rank, -1, "q_lora_rank; 0 = none (q_proj path). -1: the preset's.");
ABSL_FLAG(std::string, rope_scaling, "", "yarn or none. Default: the preset's.");
ABSL_FLAG(int64_t, vocab_size, -1, "vocab_size. -1: the preset's.");
ABSL_FLAG(int64_t, hidden_size, -1, "hidden_size. -1: the preset's.");
ABSL_FLAG(int64_t, intermediate_size, -1, "Dense MLP width. -1: the preset's.");
ABSL_FLAG(int64_t, moe_intermediate_size, -1, "Routed expert width. -1: the preset's.");
ABSL_FLAG(int64_t, num_hidden_layers, -1, "Main-model layers. -1: the preset's.");
ABSL_FLAG(int64_t, first_k_dense_replace, -1, "Leading dense-MLP layers. -1: the preset's.");
ABSL_FLAG(int64_t, num_attention_heads, -1, "Attention heads. -1: the preset's.");
ABSL_FLAG(int64_t, kv_lora_rank, -1, "kv_lora_rank. -1: the preset's.");
ABSL_FLAG(int64_t, qk_nope_head_dim, -1, "qk_nope_head_dim. -1: the preset's.");
ABSL_FLAG(int64_t, qk_rope_head_dim, -1, "qk_rope_head_dim (even). -1: the preset's.");
ABSL_FLAG(int64_t, v_head_dim, -1, "v_head_dim. -1: the preset's.");
ABSL_FLAG(int64_t, n_routed_experts, -1, "Routed experts. -1: the preset's.");
ABSL_FLAG(int64_t, n_group, -1, "Expert groups. -1: the preset's.");
ABSL_FLAG(int64_t, topk_group, -1, "Groups kept per token. -1: the preset's.");
ABSL_FLAG(int64_t, num_experts_per_tok, -1, "Experts per token. -1: the preset's.");
ABSL_FLAG(int64_t, n_shared_experts, -1, "Shared experts. -1: the preset's.");
ABSL_FLAG(std::string, chat_template, "v3",
          "Chat template in tokenizer_config.json: v3 (DeepSeek-V3), r1 (DeepSeek-R1) or v31 "
          "(DeepSeek-V3.1).");
ABSL_FLAG(bool, no_tokenizer, false,
          "Write no tokenizer.json / tokenizer_config.json (the tiny tokenizer needs vocab_size "
          ">= 276).");

namespace r2::server {
namespace {

void Override(const absl::Flag<int64_t>& flag, int64_t* field) {
  if (absl::GetFlag(flag) >= 0) *field = absl::GetFlag(flag);
}

absl::StatusOr<model::TinyModelOptions> OptionsFromFlags() {
  absl::StatusOr<model::TinyModelOptions> preset =
      model::TinyModelPreset(absl::GetFlag(FLAGS_preset));
  if (!preset.ok())
    return absl::InvalidArgumentError(absl::StrCat("--preset: ", preset.status().message()));
  model::TinyModelOptions o = *preset;
  o.seed = absl::GetFlag(FLAGS_seed);
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "bf16") {
    o.format = model::TinyWeightFormat::kBF16;
  } else if (dtype == "fp8") {
    o.format = model::TinyWeightFormat::kFp8Block;
  } else if (!dtype.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--dtype: '", dtype, "' is not bf16 or fp8"));
  }
  const std::string rope = absl::GetFlag(FLAGS_rope_scaling);
  if (rope == "yarn" || rope == "none") {
    o.yarn = rope == "yarn";
  } else if (!rope.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rope_scaling: '", rope, "' is not yarn or none"));
  }
  if (absl::GetFlag(FLAGS_shards) != 0) o.shards = absl::GetFlag(FLAGS_shards);
  Override(FLAGS_mtp_layers, &o.num_nextn_predict_layers);
  Override(FLAGS_q_lora_rank, &o.q_lora_rank);
  Override(FLAGS_vocab_size, &o.vocab_size);
  Override(FLAGS_hidden_size, &o.hidden_size);
  Override(FLAGS_intermediate_size, &o.intermediate_size);
  Override(FLAGS_moe_intermediate_size, &o.moe_intermediate_size);
  Override(FLAGS_num_hidden_layers, &o.num_hidden_layers);
  Override(FLAGS_first_k_dense_replace, &o.first_k_dense_replace);
  Override(FLAGS_num_attention_heads, &o.num_attention_heads);
  Override(FLAGS_kv_lora_rank, &o.kv_lora_rank);
  Override(FLAGS_qk_nope_head_dim, &o.qk_nope_head_dim);
  Override(FLAGS_qk_rope_head_dim, &o.qk_rope_head_dim);
  Override(FLAGS_v_head_dim, &o.v_head_dim);
  Override(FLAGS_n_routed_experts, &o.n_routed_experts);
  Override(FLAGS_n_group, &o.n_group);
  Override(FLAGS_topk_group, &o.topk_group);
  Override(FLAGS_num_experts_per_tok, &o.num_experts_per_tok);
  Override(FLAGS_n_shared_experts, &o.n_shared_experts);
  if (!absl::GetFlag(FLAGS_no_tokenizer)) {
    absl::StatusOr<tokenizer::TinyChatTemplate> chat =
        tokenizer::ParseTinyChatTemplate(absl::GetFlag(FLAGS_chat_template));
    if (!chat.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--chat_template: ", chat.status().message()));
    }
    o.write_tokenizer = tokenizer::TinyTokenizerHook(*chat);
  }
  return o;
}

int RunMakeTinyModel(int argc, char** argv) {
  constexpr absl::string_view kUsage =
      "r2serve make-tiny-model --out DIR [--preset tiny|tiny-noqlora|tiny-fp8|small] [--seed N]\n"
      "  [--dtype bf16|fp8] [--shards N] [--mtp-layers N] [--q-lora-rank N] [--hidden-size N] ...\n"
      "  [--chat-template v3|r1|v31] [--no-tokenizer]\n"
      "Writes a random-weight DeepSeek-V3 checkpoint in the Hugging Face layout (config.json,\n"
      "safetensors, generation_config.json, tokenizer.json, tokenizer_config.json). Flags may be\n"
      "spelled with - or _.";
  if (WantsHelp(argc, argv)) return PrintFlagHelp(kUsage, "cmd_make_tiny_model");
  std::vector<std::string> positional = ParseCommandFlags(argc, argv);
  if (!positional.empty()) {
    std::fprintf(stderr, "make-tiny-model: unexpected argument '%s' (see --help)\n",
                 positional[0].c_str());
    return 1;
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fprintf(stderr, "make-tiny-model: --out DIR is required (see --help)\n");
    return 1;
  }
  absl::StatusOr<model::TinyModelOptions> options = OptionsFromFlags();
  absl::Status status = options.ok() ? model::WriteTinyModel(*options, out) : options.status();
  if (!status.ok()) {
    std::fprintf(stderr, "make-tiny-model: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  absl::StatusOr<int64_t> params = model::TinyModelParameterCount(*options);
  std::printf("make-tiny-model: wrote preset '%s' (%lld parameters, %s, seed %llu) to %s\n",
              absl::GetFlag(FLAGS_preset).c_str(), static_cast<long long>(params.value_or(0)),
              options->format == model::TinyWeightFormat::kFp8Block ? "fp8" : "bf16",
              static_cast<unsigned long long>(options->seed), out.c_str());
  return 0;
}

}  // namespace

R2_REGISTER_COMMAND("make-tiny-model",
                    "write a random-weight DeepSeek-V3 checkpoint (tests, benchmarks)",
                    RunMakeTinyModel);

}  // namespace r2::server
