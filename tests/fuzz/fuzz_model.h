#pragma once
// Shared by the request fuzzers: a served model without weights. The tiny test tokenizer
// (engine/tokenizer/tiny_tokenizer.h: DeepSeek-V3's tokenizer.json shape, its special tokens and
// DeepSeek's verbatim chat templates) is trained and written to a temporary directory once, loaded
// like `r2serve serve` loads it (Tokenizer::FromFile, ServedModel::Create reading
// tokenizer_config.json), and the directory is removed again.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/tokenizer/tiny_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/openai_prompt.h"

namespace r2::fuzz {

inline constexpr int32_t kFuzzVocabSize = 1024;
inline constexpr int32_t kFuzzMaxModelLen = 1024;
inline constexpr char kFuzzModelName[] = "tiny";

struct FuzzModel {
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  std::unique_ptr<server::ServedModel> served;
};

[[noreturn]] inline void FuzzSetupFailed(const std::string& what) {
  std::fprintf(stderr, "fuzz setup: %s\n", what.c_str());
  std::abort();
}

inline FuzzModel MakeFuzzModel(tokenizer::TinyChatTemplate chat_template) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("r2_fuzz_model_" + std::to_string(getpid()) + "_" +
                                                std::to_string(static_cast<int>(chat_template)));
  std::filesystem::create_directories(dir);
  tokenizer::TinyTokenizerOptions options;
  options.model_vocab_size = kFuzzVocabSize;
  options.model_max_length = kFuzzMaxModelLen;
  options.chat_template = chat_template;
  if (absl::Status s = tokenizer::WriteTinyTokenizer(dir.string(), options); !s.ok()) {
    FuzzSetupFailed(std::string(s.message()));
  }
  FuzzModel model;
  auto tok = tokenizer::Tokenizer::FromFile((dir / "tokenizer.json").string());
  if (!tok.ok()) FuzzSetupFailed(std::string(tok.status().message()));
  model.tokenizer = *std::move(tok);
  server::ServedModelOptions served_options;
  served_options.name = kFuzzModelName;
  served_options.model_dir = dir.string();
  auto served = server::ServedModel::Create(served_options, model.tokenizer.get(), kFuzzVocabSize,
                                            kFuzzMaxModelLen);
  if (!served.ok()) FuzzSetupFailed(std::string(served.status().message()));
  model.served = *std::move(served);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return model;
}

}  // namespace r2::fuzz
