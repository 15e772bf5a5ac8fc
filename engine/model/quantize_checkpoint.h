#pragma once
// Converts a BF16/F16/F32 or FP8 (128x128 block-scaled) DeepSeek checkpoint into a
// compressed-tensors integer checkpoint (`r2serve quantize`, docs/quantization.md):
//   int8: "int-quantized" W8A8, X.weight I8 [out, in] + X.weight_scale F32 [out, 1];
//   int4: "pack-quantized" W4A16, X.weight_packed I32 [out, ceil(in/8)] + X.weight_scale BF16
//         [out, ceil(in/group)] + X.weight_shape I64 [2] (+ X.weight_zero_point when asymmetric).
// Quantized: every linear layer of attention and of the expert MLPs (q_a/q_b/q, kv_a, kv_b, o,
// gate/up/down), and the dense MLPs and lm_head only when asked. Kept as they are (FP8 ones
// dequantized to BF16): embeddings, norms, the MoE router and its bias, the MTP eh_proj and any
// tensor the forward pass does not read. The config's ignore list names the kept linear layers.
//
// Streaming: the output shards mirror the input shards; each output header is computed from the
// input headers before any data is read, then every tensor is converted in chunks of rows (the
// rows of a chunk in parallel) straight into the file, and the input pages already read are
// released (madvise), so peak memory stays about one chunk of buffers (a few MB) plus a bounded
// window of mapped input, whatever the checkpoint's size.
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace r2::model {

enum class QuantFormat { kInt8, kInt4 };

// How each int8 row's / int4 group's scale (and zero point) is chosen.
enum class ScaleChoice {
  kAuto,            // kMinSquaredError for int4, kMaxAbs for int8 (what measured best)
  kMaxAbs,          // max |w| spans the integer range (QuantizeInt8Row, QuantizeInt4Group)
  kMinSquaredError  // least squared rounding error (QuantizeInt8WeightRow,
                    // QuantizeInt4GroupMinError)
};

// Whether the attention output projections (self_attn.o_proj of every layer) are quantized.
enum class AttentionOutput {
  kAuto,      // int8: kBF16; int4: kQuantize (what measured best)
  kQuantize,  // quantized like the other linear layers
  kBF16       // kept BF16 and named in the ignore list
};

struct QuantizeOptions {
  QuantFormat format = QuantFormat::kInt8;
  int64_t group_size = 128;  // int4: input columns per scale
  bool symmetric = true;     // int4: false writes zero points
  bool quantize_lm_head = false;
  // false: the dense MLPs (gate/up/down_proj of the first first_k_dense_replace layers, three of
  // DeepSeek-V3's 61, ~0.2% of its weights) stay BF16 and are named in the config's ignore list.
  // In a trained model the input of their down_proj (the SwiGLU product) has outlier channels
  // that int8's per-token activation rounding handles badly (docs/perf/quantization.md).
  bool quantize_dense_mlp = false;
  // On the trained tiny checkpoints the least-squared-error scales lowered int4's KL on both
  // seeds, but int8's logit error rose on both (docs/perf/quantization.md), hence kAuto.
  ScaleChoice scales = ScaleChoice::kAuto;
  // o_proj (~1.1% of DeepSeek-V3's weights) stays BF16 for int8 by default: its input columns are
  // the value channels of all heads, whose magnitudes differ per head, and W8A8 shares one
  // activation scale per token and one weight scale per output row across them; on the trained
  // tiny checkpoints int8 o_proj cost more than any other attention tensor
  // (docs/perf/quantization.md).
  AttentionOutput attention_output = AttentionOutput::kAuto;
  // int8 only (ignored for int4): smooths every attention layer's value path before quantizing.
  // Value channel c (head h, dimension d) of the attention output is a linear function of row c
  // of kv_b_proj's value part, and is read only by column c of o_proj, so dividing that row by
  // s_c and multiplying that column by s_c leaves the model's function exactly as it was. W8A8
  // rounds o_proj's input per token (one scale for all channels) and o_proj's weight per output
  // row (one scale for all input columns); s_c = sqrt(a_c / w_c), with a_c the L2 norm of the
  // kv_b_proj row (the channel's expected magnitude: its input, the normalized latent, has unit
  // RMS) and w_c the largest |w| of the o_proj column, balances the two (SmoothQuant's rule at
  // alpha 0.5, with a weight-derived estimate in place of calibration activations). Applied to a
  // layer only when both of its tensors are quantized; max-abs int8 rows of kv_b_proj quantize
  // to the same integers (their scales absorb s_c), so only o_proj's rounding changes.
  // Measured on the trained tiny checkpoints it halved one seed's KL but raised the logit error on
  // both, and keeping o_proj BF16 did better on every measure, so it is off by default (and has
  // no effect while o_proj stays BF16).
  bool smooth_attention_output = false;
  // Threads that decode and quantize the rows of a chunk (0: OpenMP's default, one per core).
  int threads = 0;
  // When set, only the weights it accepts (by full tensor name) among those above are quantized.
  std::function<bool(const std::string& tensor)> filter;
  // Called after each tensor with the input bytes converted so far, the total, and the tensor.
  std::function<void(int64_t done_bytes, int64_t total_bytes, const std::string& tensor)> progress;
};

struct QuantizeSummary {
  int64_t quantized_tensors = 0;  // linear weights written as integers
  int64_t kept_tensors = 0;       // tensors copied (or dequantized from FP8 to BF16)
  int64_t input_bytes = 0;        // tensor data read
  int64_t output_bytes = 0;       // tensor data written
};

// Writes the converted checkpoint into out_dir (created if needed; must differ from in_dir):
// shards, model.safetensors.index.json when the input has one, config.json with the
// compressed-tensors quantization_config, and the other files of in_dir (tokenizer, generation
// config) copied.
// Whether `options` searches scales for the least squared error (resolves kAuto).
bool SearchesScales(const QuantizeOptions& options);
// Whether `options` keeps o_proj BF16 (resolves AttentionOutput::kAuto).
bool KeepsAttentionOutputBF16(const QuantizeOptions& options);

absl::StatusOr<QuantizeSummary> QuantizeCheckpoint(const std::string& in_dir,
                                                   const std::string& out_dir,
                                                   const QuantizeOptions& options);

}  // namespace r2::model
