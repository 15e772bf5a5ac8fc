#include "engine/tokenizer/tiny_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"

namespace r2::tokenizer {
namespace {

using nlohmann::ordered_json;

constexpr char kBos[] = "<｜begin▁of▁sentence｜>";
constexpr char kEos[] = "<｜end▁of▁sentence｜>";

// DeepSeek-V3's third Split: ASCII punctuation + letters; letters/marks with one optional leading
// non-letter; punctuation/symbol runs; newline runs; whitespace (\r and \n are real characters).
constexpr char kWordPattern[] =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*"
    "|\\s*[\r\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

ordered_json IsolatedSplit(const char* regex) {
  return ordered_json{{"type", "Split"},
                      {"pattern", {{"Regex", regex}}},
                      {"behavior", "Isolated"},
                      {"invert", false}};
}

ordered_json ByteLevel(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return ordered_json{{"type", "ByteLevel"},
                      {"add_prefix_space", add_prefix_space},
                      {"trim_offsets", trim_offsets},
                      {"use_regex", use_regex}};
}

ordered_json AddedTokensJson(const std::vector<TinySpecialToken>& specials) {
  ordered_json list = ordered_json::array();
  for (size_t id = 0; id < specials.size(); ++id) {
    list.push_back(ordered_json{{"id", id},
                                {"content", specials[id].content},
                                {"single_word", false},
                                {"lstrip", false},
                                {"rstrip", false},
                                {"normalized", specials[id].normalized},
                                {"special", specials[id].special}});
  }
  return list;
}

ordered_json ModelJson(const BpeVocabulary& vocab) {
  ordered_json tokens = ordered_json::object();
  for (size_t id = 0; id < vocab.tokens.size(); ++id) tokens[vocab.tokens[id]] = id;
  ordered_json merges = ordered_json::array();
  for (const auto& [left, right] : vocab.merges) merges.push_back(left + " " + right);
  return ordered_json{{"type", "BPE"},
                      {"dropout", nullptr},
                      {"unk_token", nullptr},
                      {"continuing_subword_prefix", nullptr},
                      {"end_of_word_suffix", nullptr},
                      {"fuse_unk", false},
                      {"byte_fallback", false},
                      {"vocab", std::move(tokens)},
                      {"merges", std::move(merges)}};
}

// tokenizer_config.json's AddedToken form of bos/eos/pad.
ordered_json ConfigToken(const char* content) {
  return ordered_json{{"__type", "AddedToken"}, {"content", content}, {"lstrip", false},
                      {"normalized", true},     {"rstrip", false},    {"single_word", false}};
}

absl::Status WriteText(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError("cannot create " + path.string());
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out) return absl::DataLossError("cannot write " + path.string());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TinyChatTemplate> ParseTinyChatTemplate(std::string_view name) {
  if (name == "v3") return TinyChatTemplate::kV3;
  if (name == "r1") return TinyChatTemplate::kR1;
  if (name == "v31" || name == "v3.1") return TinyChatTemplate::kV31;
  return absl::InvalidArgumentError(
      absl::StrCat("chat template '", Sv(name), "' is not v3, r1 or v31"));
}

const std::vector<TinySpecialToken>& TinySpecialTokens() {
  // Flags as in DeepSeek's tokenizer.json: BOS/EOS/pad special and not normalized; the chat and
  // tool tokens not special (decode keeps them) and normalized; <|EOT|> special. <think> and
  // </think> are R1's and V3.1's renamed placeholders 128798/128799, taken here as not special.
  static const auto* const kTokens = new std::vector<TinySpecialToken>{
      {kBos, true, false},
      {kEos, true, false},
      {"<｜▁pad▁｜>", true, false},
      {"<think>", false, true},
      {"</think>", false, true},
      {"<｜fim▁hole｜>", false, true},
      {"<｜fim▁begin｜>", false, true},
      {"<｜fim▁end｜>", false, true},
      {"<｜User｜>", false, true},
      {"<｜Assistant｜>", false, true},
      {"<|EOT|>", true, true},
      {"<｜tool▁calls▁begin｜>", false, true},
      {"<｜tool▁calls▁end｜>", false, true},
      {"<｜tool▁call▁begin｜>", false, true},
      {"<｜tool▁call▁end｜>", false, true},
      {"<｜tool▁outputs▁begin｜>", false, true},
      {"<｜tool▁outputs▁end｜>", false, true},
      {"<｜tool▁output▁begin｜>", false, true},
      {"<｜tool▁output▁end｜>", false, true},
      {"<｜tool▁sep｜>", false, true},
  };
  return *kTokens;
}

ordered_json DeepSeekV3PreTokenizerJson() {
  ordered_json steps = ordered_json::array();
  steps.push_back(IsolatedSplit("\\p{N}{1,3}"));
  steps.push_back(IsolatedSplit("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"));
  steps.push_back(IsolatedSplit(kWordPattern));
  steps.push_back(ByteLevel(/*add_prefix_space=*/false, /*trim_offsets=*/true,
                            /*use_regex=*/false));
  return ordered_json{{"type", "Sequence"}, {"pretokenizers", std::move(steps)}};
}

absl::StatusOr<BpeVocabulary> TrainTinyVocabulary(const TinyTokenizerOptions& options) {
  const int64_t base = static_cast<int64_t>(TinySpecialTokens().size()) + 256;
  if (options.model_vocab_size < base || options.model_vocab_size > (1 << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size ", options.model_vocab_size,
                     " does not fit the tiny tokenizer (it needs at least ", base, " ids)"));
  }
  BpeTrainerOptions trainer;
  trainer.vocab_size = static_cast<int32_t>(
      std::max<int64_t>(base, options.model_vocab_size - std::max(0, options.padding_ids)));
  for (const TinySpecialToken& t : TinySpecialTokens()) trainer.special_tokens.push_back(t.content);
  trainer.pre_tokenizer = nlohmann::json::parse(DeepSeekV3PreTokenizerJson().dump());
  return TrainBpe(TinyTokenizerCorpus(), trainer);
}

absl::StatusOr<std::string> TinyTokenizerJson(const TinyTokenizerOptions& options) {
  absl::StatusOr<BpeVocabulary> vocab = TrainTinyVocabulary(options);
  if (!vocab.ok()) return vocab.status();
  ordered_json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", AddedTokensJson(TinySpecialTokens())},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", ordered_json::array()}}},
      {"pre_tokenizer", DeepSeekV3PreTokenizerJson()},
      {"post_processor", ByteLevel(/*add_prefix_space=*/true, /*trim_offsets=*/false,
                                   /*use_regex=*/true)},
      {"decoder", ByteLevel(/*add_prefix_space=*/true, /*trim_offsets=*/true, /*use_regex=*/true)},
      {"model", ModelJson(*vocab)},
  };
  return root.dump(2) + "\n";
}

std::string TinyTokenizerConfigJson(const TinyTokenizerOptions& options) {
  const ordered_json root = {
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"bos_token", ConfigToken(kBos)},
      {"clean_up_tokenization_spaces", false},
      {"eos_token", ConfigToken(kEos)},
      {"legacy", true},
      {"model_max_length", options.model_max_length},
      {"pad_token", ConfigToken(kEos)},
      {"sp_model_kwargs", ordered_json::object()},
      {"unk_token", nullptr},
      {"tokenizer_class", "LlamaTokenizerFast"},
      {"chat_template", std::string(TinyChatTemplateSource(options.chat_template))},
  };
  return root.dump(2) + "\n";
}

absl::Status WriteTinyTokenizer(const std::string& dir, const TinyTokenizerOptions& options) {
  absl::StatusOr<std::string> tokenizer = TinyTokenizerJson(options);
  if (!tokenizer.ok()) return tokenizer.status();
  const std::filesystem::path root(dir);
  if (absl::Status s = WriteText(root / "tokenizer.json", *tokenizer); !s.ok()) return s;
  return WriteText(root / "tokenizer_config.json", TinyTokenizerConfigJson(options));
}

std::function<absl::Status(const std::string&, const model::TinyModelOptions&)> TinyTokenizerHook(
    TinyChatTemplate chat_template) {
  return [chat_template](const std::string& dir, const model::TinyModelOptions& model) {
    TinyTokenizerOptions options;
    options.model_vocab_size = model.vocab_size;
    options.model_max_length = model.max_position_embeddings;
    options.chat_template = chat_template;
    return WriteTinyTokenizer(dir, options);
  };
}

}  // namespace r2::tokenizer
