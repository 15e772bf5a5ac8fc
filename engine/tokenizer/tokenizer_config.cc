#include "engine/tokenizer/tokenizer_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"
#include "nlohmann/json.hpp"

namespace r2::tokenizer {
namespace {

using nlohmann::json;

absl::Status FieldError(std::string_view source, std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(Sv(source), ": '", Sv(field), "' ", Sv(what)));
}

// A token field: a string, an AddedToken object {"content": ...}, or null.
absl::StatusOr<std::optional<std::string>> TokenField(const json& root, const char* field,
                                                      std::string_view source) {
  if (!root.contains(field) || root[field].is_null()) return std::optional<std::string>();
  const json& value = root[field];
  if (value.is_string()) return std::optional<std::string>(value.get<std::string>());
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return std::optional<std::string>(value["content"].get<std::string>());
  }
  return FieldError(source, field, "must be a string or an object with a 'content' string");
}

absl::StatusOr<std::optional<bool>> BoolField(const json& root, const char* field,
                                              std::string_view source) {
  if (!root.contains(field) || root[field].is_null()) return std::optional<bool>();
  if (!root[field].is_boolean()) return FieldError(source, field, "must be a bool");
  return std::optional<bool>(root[field].get<bool>());
}

// chat_template: a string, or a list of {"name", "template"} (the one named "default" is used).
absl::StatusOr<std::optional<std::string>> ChatTemplate(const json& root, std::string_view source) {
  if (!root.contains("chat_template") || root["chat_template"].is_null()) {
    return std::optional<std::string>();
  }
  const json& value = root["chat_template"];
  if (value.is_string()) return std::optional<std::string>(value.get<std::string>());
  if (value.is_array()) {
    for (const json& entry : value) {
      if (entry.is_object() && entry.value("name", json()) == json("default") &&
          entry.contains("template") && entry["template"].is_string()) {
        return std::optional<std::string>(entry["template"].get<std::string>());
      }
    }
    return std::optional<std::string>();
  }
  return FieldError(source, "chat_template", "must be a string or a list of named templates");
}

absl::Status Fill(const json& root, std::string_view source, TokenizerConfig* config) {
  if (!root.is_object())
    return absl::InvalidArgumentError(absl::StrCat(Sv(source), ": not an object"));
  auto add_bos = BoolField(root, "add_bos_token", source);
  auto add_eos = BoolField(root, "add_eos_token", source);
  auto bos = TokenField(root, "bos_token", source);
  auto eos = TokenField(root, "eos_token", source);
  auto pad = TokenField(root, "pad_token", source);
  auto chat_template = ChatTemplate(root, source);
  for (const absl::Status& s : {add_bos.status(), add_eos.status(), bos.status(), eos.status(),
                                pad.status(), chat_template.status()}) {
    if (!s.ok()) return s;
  }
  config->add_bos_token = *add_bos;
  config->add_eos_token = *add_eos;
  config->bos_token = *bos;
  config->eos_token = *eos;
  config->pad_token = *pad;
  config->chat_template = *chat_template;
  if (root.contains("model_max_length") && root["model_max_length"].is_number_integer()) {
    config->model_max_length = root["model_max_length"].get<int64_t>();
  }
  if (root.contains("tokenizer_class") && root["tokenizer_class"].is_string()) {
    config->tokenizer_class = root["tokenizer_class"].get<std::string>();
  }
  auto cleanup = BoolField(root, "clean_up_tokenization_spaces", source);
  if (!cleanup.ok()) return cleanup.status();
  config->clean_up_tokenization_spaces = cleanup->value_or(false);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(std::string_view text,
                                                     std::string_view source) {
  const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(Sv(source), ": bad JSON"));
  TokenizerConfig config;
  try {
    if (absl::Status s = Fill(root, source, &config); !s.ok()) return s;
  } catch (const json::exception& e) {  // a type the checks above did not expect
    return absl::InvalidArgumentError(absl::StrCat(Sv(source), ": ", e.what()));
  }
  return config;
}

absl::StatusOr<TokenizerConfig> LoadTokenizerConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError("cannot read " + path);
  return ParseTokenizerConfig(text.str(), path);
}

}  // namespace r2::tokenizer
