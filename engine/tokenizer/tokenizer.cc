#include "engine/tokenizer/tokenizer.h"

#include <filesystem>
#include <forward_list>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/string_map.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace r2::tokenizer {
namespace {

using nlohmann::json;

std::string TypeOf(const json& spec) {
  if (spec.is_object() && spec.contains("type") && spec["type"].is_string()) {
    return spec["type"].get<std::string>();
  }
  return spec.dump();
}

absl::Status CheckNormalizer(const json& spec) {
  if (spec.is_null()) return absl::OkStatus();
  if (TypeOf(spec) == "Sequence" && spec.contains("normalizers") &&
      spec["normalizers"].is_array()) {
    for (const json& inner : spec["normalizers"]) {
      if (absl::Status s = CheckNormalizer(inner); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unsupported normalizer " + TypeOf(spec));
}

absl::Status CheckDecoder(const json& spec) {
  if (TypeOf(spec) == "ByteLevel") return absl::OkStatus();
  if (TypeOf(spec) == "Sequence" && spec.contains("decoders") && spec["decoders"].is_array() &&
      !spec["decoders"].empty()) {
    for (const json& inner : spec["decoders"]) {
      if (absl::Status s = CheckDecoder(inner); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unsupported decoder " + TypeOf(spec) + " (only ByteLevel)");
}

// TemplateProcessing's "single" template: ids before and after the sequence.
absl::Status ParseTemplate(const json& spec, std::vector<int32_t>* prefix,
                           std::vector<int32_t>* suffix) {
  const json single = spec.value("single", json());
  const json special = spec.value("special_tokens", json::object());
  if (!single.is_array() || !special.is_object()) {
    return absl::InvalidArgumentError("post_processor TemplateProcessing: bad 'single'");
  }
  std::vector<int32_t> before, after;
  int sequences = 0;
  for (const json& piece : single) {
    if (piece.contains("Sequence") && piece["Sequence"].value("id", json()) == json("A")) {
      ++sequences;
      continue;
    }
    const json name =
        piece.contains("SpecialToken") ? piece["SpecialToken"].value("id", json()) : json();
    if (!name.is_string() || !special.contains(name.get<std::string>())) {
      return absl::InvalidArgumentError("post_processor TemplateProcessing: bad piece " +
                                        piece.dump());
    }
    const json ids = special[name.get<std::string>()].value("ids", json());
    if (!ids.is_array()) return absl::InvalidArgumentError("TemplateProcessing: bad ids");
    for (const json& id : ids) {
      if (!id.is_number_integer()) return absl::InvalidArgumentError("TemplateProcessing: bad id");
      (sequences == 0 ? before : after).push_back(id.get<int32_t>());
    }
  }
  if (sequences != 1) {
    return absl::InvalidArgumentError("post_processor TemplateProcessing: 'single' needs one $A");
  }
  prefix->insert(prefix->begin(), before.begin(), before.end());
  suffix->insert(suffix->end(), after.begin(), after.end());
  return absl::OkStatus();
}

absl::Status ParsePostProcessor(const json& spec, std::vector<int32_t>* prefix,
                                std::vector<int32_t>* suffix) {
  if (spec.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(spec);
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "TemplateProcessing") return ParseTemplate(spec, prefix, suffix);
  if (type == "Sequence" && spec.contains("processors") && spec["processors"].is_array()) {
    for (const json& inner : spec["processors"]) {
      if (absl::Status s = ParsePostProcessor(inner, prefix, suffix); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unsupported post_processor " + type);
}

absl::StatusOr<bool> FlagOf(const json& entry, const char* key, bool fallback) {
  if (!entry.contains(key)) return fallback;
  if (!entry[key].is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat("added_tokens: '", key, "' must be a bool"));
  }
  return entry[key].get<bool>();
}

absl::StatusOr<AddedToken> ParseAddedToken(const json& entry) {
  if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
      !entry.contains("content") || !entry["content"].is_string()) {
    return absl::InvalidArgumentError("added_tokens: entry needs an integer 'id' and a 'content'");
  }
  AddedToken token;
  const int64_t id = entry["id"].get<int64_t>();
  if (id < 0 || id >= (1 << 24)) return absl::InvalidArgumentError("added_tokens: bad id");
  token.id = static_cast<int32_t>(id);
  token.content = entry["content"].get<std::string>();
  if (token.content.empty() || !IsValidUtf8(token.content)) {
    return absl::InvalidArgumentError("added_tokens: empty or invalid content");
  }
  const std::pair<const char*, bool*> flags[] = {{"single_word", &token.single_word},
                                                 {"lstrip", &token.lstrip},
                                                 {"rstrip", &token.rstrip},
                                                 {"normalized", &token.normalized},
                                                 {"special", &token.special}};
  for (const auto& [key, field] : flags) {
    auto value = FlagOf(entry, key, *field);
    if (!value.ok()) return value.status();
    *field = *value;
  }
  return token;
}

// Reads the added tokens, checking each id is the one Hugging Face assigns when loading the file
// (the model's id for a token already in the vocabulary, else the next free id).
absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const json& list, const BpeModel& model,
                                                         int64_t model_vocab_count) {
  std::vector<AddedToken> tokens;
  if (list.is_null()) return tokens;
  if (!list.is_array()) return absl::InvalidArgumentError("'added_tokens' must be a list");
  StringMap<int32_t> seen;
  int64_t max_id = -1;
  for (const json& entry : list) {
    auto token = ParseAddedToken(entry);
    if (!token.ok()) return token.status();
    if (!seen.emplace(token->content, token->id).second) {
      return absl::InvalidArgumentError("added_tokens: '" + token->content + "' appears twice");
    }
    int64_t expected;
    if (std::optional<int32_t> in_model = model.TokenToId(token->content)) {
      expected = *in_model;
    } else if (max_id < 0) {
      expected = model_vocab_count;
    } else {
      expected =
          (max_id >= model_vocab_count || model_vocab_count == 0) ? max_id + 1 : model_vocab_count;
    }
    if (expected != token->id) {
      return absl::InvalidArgumentError(absl::StrCat("added_tokens: '", token->content, "' has id ",
                                                     token->id, " but would be loaded as ",
                                                     expected));
    }
    max_id = std::max<int64_t>(max_id, token->id);
    tokens.push_back(*std::move(token));
  }
  return tokens;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError("cannot read " + path);
  return text.str();
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::optional<TokenizerConfig> config;
  const auto config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    auto loaded = LoadTokenizerConfig(config_path.string());
    if (!loaded.ok()) return loaded.status();
    config = *std::move(loaded);
  }
  return FromJson(*text, path, std::move(config));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    std::string_view json_text, std::string_view source, std::optional<TokenizerConfig> config) {
  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer());
  if (config) tokenizer->config_ = *std::move(config);
  absl::Status status;
  try {
    status = tokenizer->LoadJson(json_text, source);
  } catch (const json::exception& e) {  // a shape the checks did not foresee
    status = absl::InvalidArgumentError(e.what());
  }
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(Sv(source), ": ", status.message()));
  }
  return tokenizer;
}

absl::Status Tokenizer::LoadJson(std::string_view json_text, std::string_view source) {
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!root.is_object()) return absl::InvalidArgumentError("not a JSON object");
  if (!root.contains("model")) return absl::InvalidArgumentError("no 'model'");
  if (absl::Status s = CheckNormalizer(root.value("normalizer", json())); !s.ok()) return s;
  auto model = BpeModel::FromJson(root["model"], source);
  if (!model.ok()) return model.status();
  model_ = *std::move(model);
  auto pre = PreTokenizer::FromJson(root.value("pre_tokenizer", json()));
  if (!pre.ok()) return pre.status();
  pre_tokenizer_ = *std::move(pre);
  auto added = ParseAddedTokens(root.value("added_tokens", json()), *model_,
                                static_cast<int64_t>(root["model"]["vocab"].size()));
  if (!added.ok()) return added.status();
  added_ = std::make_unique<AddedVocabulary>(*std::move(added));
  if (absl::Status s =
          ParsePostProcessor(root.value("post_processor", json()), &prefix_ids_, &suffix_ids_);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDecoder(root.value("decoder", json())); !s.ok()) return s;
  vocab_size_ = model_->id_limit();
  for (const AddedToken& t : added_->tokens()) vocab_size_ = std::max(vocab_size_, t.id + 1);
  for (int32_t id : prefix_ids_) {
    if (id < 0 || id >= vocab_size_) return absl::InvalidArgumentError("post_processor: bad id");
  }
  for (int32_t id : suffix_ids_) {
    if (id < 0 || id >= vocab_size_) return absl::InvalidArgumentError("post_processor: bad id");
  }
  ResolveSpecialIds();
  return BuildDecodeTable();
}

void Tokenizer::ResolveSpecialIds() {
  if (config_.bos_token) bos_id_ = TokenToId(*config_.bos_token);
  if (!bos_id_ && !prefix_ids_.empty()) bos_id_ = prefix_ids_.front();
  if (config_.eos_token) eos_id_ = TokenToId(*config_.eos_token);
  if (!eos_id_ && !suffix_ids_.empty()) eos_id_ = suffix_ids_.back();
  if (config_.add_bos_token || config_.add_eos_token) {
    // transformers (LlamaTokenizerFast) rebuilds the post-processor as [bos] $A [eos].
    if (config_.add_bos_token.value_or(false) && bos_id_) add_prefix_ = {*bos_id_};
    if (config_.add_eos_token.value_or(false) && eos_id_) add_suffix_ = {*eos_id_};
  } else {
    add_prefix_ = prefix_ids_;
    add_suffix_ = suffix_ids_;
  }
}

absl::Status Tokenizer::BuildDecodeTable() {
  decode_start_.assign(static_cast<size_t>(vocab_size_) + 1, 0);
  special_.assign(static_cast<size_t>(vocab_size_), false);
  for (int32_t id = 0; id < vocab_size_; ++id) {
    decode_start_[id] = static_cast<uint32_t>(decode_bytes_.size());
    std::string token = IdToToken(id);
    // ByteLevel decoder: a token spelled in the byte alphabet gives those bytes, any other token
    // (an added token such as "<｜User｜>") its own UTF-8.
    if (std::optional<std::string> bytes = ByteLevelToBytes(token)) {
      decode_bytes_ += *bytes;
    } else {
      decode_bytes_ += token;
    }
    if (decode_bytes_.size() > UINT32_MAX) return absl::InvalidArgumentError("vocabulary too big");
    const AddedToken* added = added_->FindId(id);
    special_[id] = added != nullptr && added->special;
  }
  decode_start_[vocab_size_] = static_cast<uint32_t>(decode_bytes_.size());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       bool add_special_tokens,
                                                       bool parse_special) const {
  std::string replaced;
  if (!IsValidUtf8(text)) {
    AppendUtf8Lossy(text, &replaced);
    text = replaced;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = add_prefix_;
  std::vector<TextSegment> segments;
  added_->Split(text, parse_special, &segments);
  for (const TextSegment& segment : segments) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
    } else if (absl::Status s = EncodeSegment(segment.text, &ids); !s.ok()) {
      return s;
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), add_suffix_.begin(), add_suffix_.end());
  return ids;
}

absl::Status Tokenizer::EncodeSegment(std::string_view text, std::vector<int32_t>* ids) const {
  std::vector<std::string_view> pieces;
  std::forward_list<std::string> storage;
  if (absl::Status s = pre_tokenizer_->Split(text, &pieces, &storage); !s.ok()) return s;
  for (std::string_view piece : pieces) model_->EncodeWord(piece, ids);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Tokenizer::PreTokenize(std::string_view text) const {
  std::string replaced;
  if (!IsValidUtf8(text)) {
    AppendUtf8Lossy(text, &replaced);
    text = replaced;
  }
  std::vector<std::string_view> pieces;
  std::forward_list<std::string> storage;
  if (absl::Status s = pre_tokenizer_->Split(text, &pieces, &storage); !s.ok()) return s;
  return std::vector<std::string>(pieces.begin(), pieces.end());
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return {};
  return std::string_view(decode_bytes_)
      .substr(decode_start_[id], decode_start_[id + 1] - decode_start_[id]);
}

bool Tokenizer::IsSpecial(int32_t id) const { return id >= 0 && id < vocab_size_ && special_[id]; }

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    bytes += TokenBytes(id);
  }
  if (IsValidUtf8(bytes)) return bytes;
  std::string text;
  AppendUtf8Lossy(bytes, &text);
  return text;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (const AddedToken* added = added_->FindContent(token)) return added->id;
  return model_->TokenToId(token);
}

std::string Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* added = added_->FindId(id)) return added->content;
  const std::string* token = model_->IdToToken(id);
  return token == nullptr ? std::string() : *token;
}

}  // namespace r2::tokenizer
