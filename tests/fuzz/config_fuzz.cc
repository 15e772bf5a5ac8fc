// libFuzzer target: ParseModelConfig on arbitrary text must return a Status, never crash; an
// accepted config must be internally consistent.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/model/checkpoint.h"
#include "engine/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = r2::model::ParseModelConfig(text, "config.json");
  if (config.ok()) {
    if (config->n_routed_experts % config->n_group != 0) __builtin_trap();
    if (config->qk_rope_head_dim % 2 != 0) __builtin_trap();
    (void)config->softmax_scale();
    // Listing the tensors is linear in layers x experts, both bounded by the parser.
    if (config->num_hidden_layers * config->n_routed_experts < 4096) {
      (void)r2::model::ExpectedTensors(*config);
    }
  }
  return 0;
}
