#pragma once
// A Hugging Face checkpoint directory: config.json plus one model.safetensors or shards listed in
// model.safetensors.index.json. Open() validates everything before the model is built: the config,
// every shard's header, and that every tensor the config implies is present with the expected shape
// and an allowed dtype (and, for F8_E4M3 weights, a weight_scale_inv of the right block shape).
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"
#include "kernels/tensor.h"

namespace r2::model {

enum class TensorKind {
  kLinear,  // a [out, in] weight: BF16/F16/F32, or F8_E4M3 with a sibling weight_scale_inv
  kVector,  // a norm weight or bias: BF16/F16/F32
  kTable,   // embedding / lm_head: BF16/F16/F32
};

struct ExpectedTensor {
  std::string name;  // full name, e.g. "model.layers.0.self_attn.q_a_proj.weight"
  std::vector<int64_t> shape;
  TensorKind kind;
};

// Every tensor the forward pass reads for this config, MTP layers included.
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  bool Has(const std::string& name) const;
  absl::StatusOr<TensorView> Tensor(const std::string& name) const;
  // `name` is the weight's full name ("....q_a_proj.weight"); the scale is found beside it.
  absl::StatusOr<WeightView> Linear(const std::string& name) const;
  // Every file's read-only mapping (the bytes the views point into).
  std::vector<absl::Span<const uint8_t>> Mappings() const {
    std::vector<absl::Span<const uint8_t>> spans;
    for (const auto& f : files_) spans.push_back(f->mapping());
    return spans;
  }

 private:
  absl::Status Validate() const;
  absl::Status ValidateTensor(const ExpectedTensor& expected) const;
  // An F8_E4M3 weight's sibling "<name>_scale_inv": present, F32, one value per block.
  absl::Status ValidateScale(const std::string& name, const TensorView& weight) const;
  // The file that holds `name`, or that lists the tensors when it is absent (for messages).
  std::string ExpectedFile(const std::string& name) const;
  // quantization_config's weight_block_size (128x128 when there is none).
  std::pair<int64_t, int64_t> BlockSize() const;

  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;  // tensor name -> file holding it
  std::string listing_;  // model.safetensors or model.safetensors.index.json
};

}  // namespace r2::model
