#pragma once
// Shared fixtures of the tokenizer tests: the golden files of tests/golden/gen_tokenizer_goldens.py
// and the tokenizers they were made with, each loaded once per process.
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace r2::tokenizer::testing {

// Debug and sanitizer builds (CI runs these tests under ASan/UBSan in Debug) run the heaviest
// loops on a sample: they look for memory errors there; equivalence is proven by release runs.
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
inline constexpr int kSampleEvery = 1;
#else
inline constexpr int kSampleEvery = 8;
#endif

// tests/golden/fixtures/tokenizer/
std::string FixtureDir();
// ../shared/models/deepseek-v3-tokenizer/tokenizer.json (may be absent).
std::string DeepSeekPath();

// A tokenizer by fixture name: "deepseek_v3" (nullptr when ../shared is absent), "gpt2_style",
// "variant_prefix", "variant_splits". Fails the test (and returns nullptr) if it does not load.
const Tokenizer* LoadNamed(const std::string& name);

// The corpus lines, and a goldens_<name>.json file.
const std::vector<std::string>& Corpus();
const nlohmann::json& Goldens(const std::string& name);

// Reads a whole file ("" if missing).
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace r2::tokenizer::testing

// Skips the current test when the DeepSeek tokenizer is not available.
#define R2_SKIP_IF_NO_DEEPSEEK(name)                                                 \
  if ((name) == "deepseek_v3" && ReadFileOrEmpty(DeepSeekPath()).empty()) {          \
    GTEST_SKIP() << "../shared/models/deepseek-v3-tokenizer is absent: DeepSeek-V3 " \
                    "tokenizer goldens not checked";                                 \
  }
