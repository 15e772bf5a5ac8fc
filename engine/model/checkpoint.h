#pragma once
// A Hugging Face checkpoint directory: config.json plus one model.safetensors or shards listed in
// model.safetensors.index.json. Open() validates everything before the model is built: the config,
// every shard's header, and that every tensor the config implies is present with the expected shape
// and an allowed dtype (and, for F8_E4M3 weights, a weight_scale_inv of the right block shape).
#include <memory>
#include <string>
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

 private:
  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;  // tensor name -> file holding it
};

}  // namespace r2::model
