// libFuzzer target: ParseSafetensors on arbitrary bytes must return a Status, never crash.
#include <cstddef>
#include <cstdint>

#include "engine/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto entries = r2::model::ParseSafetensors(absl::MakeConstSpan(data, size), "fuzz.safetensors");
  if (entries.ok()) {
    // Every accepted entry must lie inside the data section.
    for (const auto& [name, e] : *entries) {
      if (e.end < e.begin || e.end > size) __builtin_trap();
    }
  }
  return 0;
}
