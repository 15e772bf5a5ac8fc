#pragma once
// The integer weight schemes of config.json's quantization_config with quant_method
// "compressed-tensors" (docs/quantization.md): "int-quantized" int8 weights per output channel
// with dynamic per-token int8 activations (W8A8), and "pack-quantized" int4 weights per group of
// input columns (or per channel) with float activations (W4A16). Anything else that format can
// describe (fp8 "float-quantized", W4A8, activation reordering, static activation scales, a
// quantized KV cache, several different schemes in one model) is rejected with an error naming
// the field and the value.
#include <cstdint>
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
};

// Parses a quantization_config object whose quant_method is "compressed-tensors". `source` names
// the file in messages; fields are reported as "quantization_config.<path>".
absl::StatusOr<CompressedTensorsScheme> ParseCompressedTensorsConfig(const nlohmann::json& q,
                                                                     const std::string& source);

// The quantization_config object that describes `scheme` (what r2serve quantize writes).
nlohmann::json CompressedTensorsConfigJson(const CompressedTensorsScheme& scheme);

}  // namespace r2::model
