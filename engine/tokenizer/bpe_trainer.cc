#include "engine/tokenizer/bpe_trainer.h"

#include <algorithm>
#include <forward_list>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/string_map.h"

namespace r2::tokenizer {
namespace {

constexpr int32_t kByteTokens = 256;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
int32_t LeftOf(uint64_t key) { return static_cast<int32_t>(key >> 32); }
int32_t RightOf(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

// Appends the parts of `text` between occurrences of the special tokens (leftmost, then longest).
void SplitAroundSpecials(std::string_view text, const std::vector<std::string>& specials,
                         std::vector<std::string_view>* parts) {
  while (!text.empty()) {
    size_t best = std::string_view::npos;
    size_t best_length = 0;
    for (const std::string& special : specials) {
      const size_t at = text.find(special);
      if (at == std::string_view::npos) continue;
      if (at < best || (at == best && special.size() > best_length)) {
        best = at;
        best_length = special.size();
      }
    }
    if (best == std::string_view::npos) {
      parts->push_back(text);
      return;
    }
    if (best > 0) parts->push_back(text.substr(0, best));
    text.remove_prefix(best + best_length);
  }
}

class Trainer {
 public:
  explicit Trainer(const BpeTrainerOptions& options) : options_(options) {}

  absl::Status CountWords(const std::vector<std::string>& corpus);
  void InitVocabulary();
  void Train();
  BpeVocabulary Finish() &&;

 private:
  struct Word {
    std::vector<int32_t> symbols;
    int64_t count = 0;
  };

  // Whether pair `a` should be merged before pair `b` (both with counts).
  bool Better(uint64_t a, int64_t count_a, uint64_t b, int64_t count_b) const;
  // The pair to merge next, or nullopt when none is frequent enough.
  std::optional<uint64_t> BestPair() const;
  void AddPairs(int32_t word, int64_t sign);
  void MergeInWord(Word* word, int32_t left, int32_t right, int32_t merged) const;
  void ApplyMerge(uint64_t pair, int32_t merged);
  int32_t AddToken(std::string bytes);

  const BpeTrainerOptions& options_;
  std::vector<Word> words_;
  std::vector<std::string> token_bytes_;   // id -> raw bytes (special tokens: their text)
  std::vector<std::string> token_string_;  // id -> tokenizer.json spelling
  StringMap<int32_t> id_of_bytes_;         // non-special tokens by raw bytes
  std::unordered_set<std::string> special_strings_;
  std::unordered_map<uint64_t, int64_t> pair_counts_;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words_;  // may repeat or be stale
  std::vector<std::pair<std::string, std::string>> merges_;
};

absl::Status Trainer::CountWords(const std::vector<std::string>& corpus) {
  auto pre = PreTokenizer::FromJson(options_.pre_tokenizer);
  if (!pre.ok()) return pre.status();
  std::map<std::string, int64_t, std::less<>> counts;  // sorted: words_ in a fixed order
  std::vector<std::string_view> parts;
  std::vector<std::string_view> pieces;
  std::forward_list<std::string> storage;
  for (const std::string& text : corpus) {
    parts.clear();
    SplitAroundSpecials(text, options_.special_tokens, &parts);
    for (std::string_view part : parts) {
      pieces.clear();
      if (absl::Status s = (*pre)->Split(part, &pieces, &storage); !s.ok()) return s;
      for (std::string_view piece : pieces) {
        auto it = counts.find(piece);
        if (it == counts.end()) it = counts.emplace(std::string(piece), 0).first;
        ++it->second;
      }
    }
  }
  words_.reserve(counts.size());
  for (const auto& [text, count] : counts) {
    Word word;
    word.count = count;
    word.symbols.reserve(text.size());
    for (unsigned char byte : text) word.symbols.push_back(byte);  // byte ids fixed up below
    words_.push_back(std::move(word));
  }
  return absl::OkStatus();
}

void Trainer::InitVocabulary() {
  for (const std::string& special : options_.special_tokens) {
    token_bytes_.push_back(special);
    token_string_.push_back(special);
    special_strings_.insert(special);
  }
  std::vector<int> bytes(kByteTokens);
  for (int b = 0; b < kByteTokens; ++b) bytes[b] = b;
  std::sort(bytes.begin(), bytes.end(), [](int a, int b) {
    return ByteToChar(static_cast<uint8_t>(a)) < ByteToChar(static_cast<uint8_t>(b));
  });
  int32_t byte_id[kByteTokens];
  for (int b : bytes) byte_id[b] = AddToken(std::string(1, static_cast<char>(b)));
  for (int32_t w = 0; w < static_cast<int32_t>(words_.size()); ++w) {
    for (int32_t& symbol : words_[w].symbols) symbol = byte_id[symbol];
    AddPairs(w, +1);
  }
}

int32_t Trainer::AddToken(std::string bytes) {
  const auto id = static_cast<int32_t>(token_bytes_.size());
  token_string_.push_back(BytesToByteLevel(bytes));
  id_of_bytes_.emplace(bytes, id);
  token_bytes_.push_back(std::move(bytes));
  return id;
}

void Trainer::AddPairs(int32_t word, int64_t sign) {
  const Word& w = words_[word];
  for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
    const uint64_t key = PairKey(w.symbols[i], w.symbols[i + 1]);
    int64_t& count = pair_counts_[key];
    count += sign * w.count;
    if (count == 0) {
      pair_counts_.erase(key);
    } else if (sign > 0) {
      pair_words_[key].push_back(word);
    }
  }
}

bool Trainer::Better(uint64_t a, int64_t count_a, uint64_t b, int64_t count_b) const {
  if (count_a != count_b) return count_a > count_b;
  const int order = token_string_[LeftOf(a)].compare(token_string_[LeftOf(b)]);
  if (order != 0) return order < 0;
  return token_string_[RightOf(a)] < token_string_[RightOf(b)];
}

std::optional<uint64_t> Trainer::BestPair() const {
  std::optional<uint64_t> best;
  int64_t best_count = 0;
  for (const auto& [key, count] : pair_counts_) {
    if (count < options_.min_frequency || count < 1) continue;
    if (!best || Better(key, count, *best, best_count)) {
      best = key;
      best_count = count;
    }
  }
  return best;
}

void Trainer::MergeInWord(Word* word, int32_t left, int32_t right, int32_t merged) const {
  std::vector<int32_t>& s = word->symbols;
  size_t out = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i + 1 < s.size() && s[i] == left && s[i + 1] == right) {
      s[out++] = merged;
      ++i;
    } else {
      s[out++] = s[i];
    }
  }
  s.resize(out);
}

void Trainer::ApplyMerge(uint64_t pair, int32_t merged) {
  std::vector<int32_t> affected = std::move(pair_words_[pair]);
  pair_words_.erase(pair);
  std::sort(affected.begin(), affected.end());
  affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
  for (int32_t w : affected) {
    AddPairs(w, -1);
    MergeInWord(&words_[w], LeftOf(pair), RightOf(pair), merged);
    AddPairs(w, +1);
  }
}

void Trainer::Train() {
  while (static_cast<int32_t>(token_bytes_.size()) < options_.vocab_size) {
    const std::optional<uint64_t> pair = BestPair();
    if (!pair) return;
    std::string bytes = token_bytes_[LeftOf(*pair)] + token_bytes_[RightOf(*pair)];
    int32_t merged;
    if (auto it = id_of_bytes_.find(bytes); it != id_of_bytes_.end()) {
      merged = it->second;  // another pair already spelled this token
    } else if (special_strings_.count(BytesToByteLevel(bytes)) != 0) {
      pair_counts_.erase(*pair);  // would collide with a special token's entry: never merge it
      pair_words_.erase(*pair);
      continue;
    } else {
      merged = AddToken(std::move(bytes));
    }
    merges_.emplace_back(token_string_[LeftOf(*pair)], token_string_[RightOf(*pair)]);
    ApplyMerge(*pair, merged);
  }
}

BpeVocabulary Trainer::Finish() && {
  BpeVocabulary vocab;
  vocab.tokens = std::move(token_string_);
  vocab.merges = std::move(merges_);
  vocab.num_special = static_cast<int32_t>(options_.special_tokens.size());
  return vocab;
}

}  // namespace

absl::StatusOr<BpeVocabulary> TrainBpe(const std::vector<std::string>& corpus,
                                       const BpeTrainerOptions& options) {
  const int64_t base = static_cast<int64_t>(options.special_tokens.size()) + kByteTokens;
  if (options.vocab_size < base) {
    return absl::InvalidArgumentError(absl::StrCat("BPE trainer: vocab_size ", options.vocab_size,
                                                   " is below the ", base,
                                                   " ids of the special and byte tokens"));
  }
  std::unordered_set<std::string> seen;
  for (const std::string& special : options.special_tokens) {
    if (special.empty() || !seen.insert(special).second) {
      return absl::InvalidArgumentError("BPE trainer: special tokens must be distinct, non-empty");
    }
    if (std::optional<std::string> bytes = ByteLevelToBytes(special); bytes && bytes->size() == 1) {
      return absl::InvalidArgumentError("BPE trainer: special token '" + special +
                                        "' spells a byte token");
    }
  }
  Trainer trainer(options);
  if (absl::Status s = trainer.CountWords(corpus); !s.ok()) return s;
  trainer.InitVocabulary();
  trainer.Train();
  return std::move(trainer).Finish();
}

}  // namespace r2::tokenizer
