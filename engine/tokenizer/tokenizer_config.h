#pragma once
// tokenizer_config.json (transformers): the few fields the server needs beside tokenizer.json.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace r2::tokenizer {

struct TokenizerConfig {
  std::optional<bool> add_bos_token;  // absent: the post-processor decides
  std::optional<bool> add_eos_token;
  std::optional<std::string> bos_token;  // token strings ("<｜begin▁of▁sentence｜>")
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<std::string> chat_template;  // the Jinja source (the "default" one if a list)
  std::optional<int64_t> model_max_length;   // absent or not an integer that fits: nullopt
  std::string tokenizer_class;
  bool clean_up_tokenization_spaces = false;
};

// Parses tokenizer_config.json text; `source` names it in errors.
absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(std::string_view json,
                                                     std::string_view source);
// Reads and parses a tokenizer_config.json file.
absl::StatusOr<TokenizerConfig> LoadTokenizerConfig(const std::string& path);

}  // namespace r2::tokenizer
