#pragma once
// The integer weight schemes of config.json's quantization_config with quant_method
// "compressed-tensors" (docs/quantization.md): "int-quantized" int8 weights per output channel
// with dynamic per-token int8 activations (W8A8), and "pack-quantized" int4 weights per group of
// input columns (or per channel) with float activations (W4A16). Anything else that format can
// describe (fp8 "float-quantized", W4A8, activation reordering, static activation scales, a
// quantized KV cache, several different schemes in one model) is rejected with an error naming
// the field and the value.
#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace r2::model {

struct CompressedTensorsScheme {
  std::string format;      // "int-quantized" (int8) or "pack-quantized" (int4)
  int64_t num_bits = 0;    // 8 or 4
  int64_t group_size = 0;  // int4 "group" strategy: input columns per scale; 0: per channel
  bool symmetric = true;   // false: int4 with zero points (weight_zero_point)
  std::vector<std::string> ignore;  // modules left unquantized (names or "re:" patterns)
  // The "re:" entries of `ignore`, compiled (ParseCompressedTensorsConfig fills it; code that
  // builds a scheme calls CompileIgnorePatterns).
  std::vector<std::shared_ptr<const std::regex>> ignore_patterns;
  // The weight observer named in the config ("minmax": max-abs scales; "mse": scales searched
  // for the least squared error, what r2serve quantize does). Informational only.
  std::string observer = "minmax";
};

// Compiles the "re:" entries of scheme.ignore into scheme.ignore_patterns; InvalidArgument naming
// the entry when one is not a valid (ECMAScript) regular expression.
absl::Status CompileIgnorePatterns(CompressedTensorsScheme& scheme);

// True when `module` (a weight's name without ".weight", e.g. "model.layers.0.mlp.down_proj") is
// left unquantized by the scheme's ignore list, as compressed-tensors matches it: an entry equal
// to the name, or a "re:" pattern that matches from the start of the name.
bool IgnoresModule(const CompressedTensorsScheme& scheme, const std::string& module);

// Parses a quantization_config object whose quant_method is "compressed-tensors". `source` names
// the file in messages; fields are reported as "quantization_config.<path>".
absl::StatusOr<CompressedTensorsScheme> ParseCompressedTensorsConfig(const nlohmann::json& q,
                                                                     const std::string& source);

// The quantization_config object that describes `scheme` (what r2serve quantize writes).
nlohmann::json CompressedTensorsConfigJson(const CompressedTensorsScheme& scheme);

}  // namespace r2::model
