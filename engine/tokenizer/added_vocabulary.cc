#include "engine/tokenizer/added_vocabulary.h"

#include <bitset>

#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/u64_map.h"
#include "engine/tokenizer/utf8.h"

namespace r2::tokenizer {

// A byte trie over token contents for leftmost-longest matching.
class AddedVocabulary::Trie {
 public:
  void Add(std::string_view content, size_t token_index) {
    if (content.empty()) return;
    first_bytes_.set(static_cast<unsigned char>(content[0]));
    int32_t node = 0;
    for (char c : content) {
      auto [child, inserted] =
          edges_.Insert(Key(node, c), static_cast<int32_t>(terminal_.size()), false);
      if (inserted) terminal_.push_back(-1);
      node = *child;
    }
    terminal_[node] = static_cast<int64_t>(token_index);
  }

  // Finds the leftmost-longest match at or after `from`: returns false if none.
  bool Find(std::string_view text, size_t from, size_t* begin, size_t* end, size_t* token) const {
    for (size_t i = from; i < text.size(); ++i) {
      if (!first_bytes_.test(static_cast<unsigned char>(text[i]))) continue;
      int32_t node = 0;
      int64_t best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < text.size(); ++j) {
        const int32_t* child = edges_.Find(Key(node, text[j]));
        if (child == nullptr) break;
        node = *child;
        if (terminal_[node] >= 0) {
          best = terminal_[node];
          best_end = j + 1;
        }
      }
      if (best >= 0) {
        *begin = i;
        *end = best_end;
        *token = static_cast<size_t>(best);
        return true;
      }
    }
    return false;
  }

  bool empty() const { return edges_.size() == 0; }

 private:
  static uint64_t Key(int32_t node, char c) {
    return (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
  }
  std::bitset<256> first_bytes_;
  U64Map<int32_t> edges_;
  std::vector<int64_t> terminal_ = {-1};  // per node: token index, or -1
};

namespace {

// Decodes the character that ends at `end` (text[..end] is valid UTF-8 ending at a boundary).
char32_t CharBefore(std::string_view text, size_t end, size_t* begin) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  *begin = i;
  return ReadUtf8Char(text.substr(i, end - i)).code_point;
}

// Rust regex's Unicode \w, which Hugging Face uses for single_word: Alphabetic (letters, letter
// numbers and the Other_Alphabetic marks and circled letters), marks, decimal digits, connector
// punctuation and the joiners.
bool IsWordChar(std::string_view one_char) {
  static const Regex* const kWord =
      Regex::Compile(
          R"([\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}\x{24B6}-\x{24E9}\x{1F130}-\x{1F149})"
          R"(\x{1F150}-\x{1F169}\x{1F170}-\x{1F189}])")
          ->release();
  const absl::StatusOr<bool> matched = kWord->MatchesAtStart(one_char);
  return matched.ok() && *matched;
}

bool EndsWithWord(std::string_view text, size_t end) {
  if (end == 0) return false;
  size_t begin;
  CharBefore(text, end, &begin);
  return IsWordChar(text.substr(begin, end - begin));
}

bool StartsWithWord(std::string_view text, size_t begin) {
  if (begin >= text.size()) return false;
  return IsWordChar(text.substr(begin, Utf8Length(static_cast<unsigned char>(text[begin]))));
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens)
    : tokens_(std::move(tokens)),
      raw_trie_(std::make_unique<Trie>()),
      normalized_trie_(std::make_unique<Trie>()) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    by_id_[tokens_[i].id] = i;
    by_content_[tokens_[i].content] = i;
    (tokens_[i].normalized ? normalized_trie_ : raw_trie_)->Add(tokens_[i].content, i);
  }
}

AddedVocabulary::~AddedVocabulary() = default;

const AddedToken* AddedVocabulary::FindId(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::FindContent(std::string_view content) const {
  auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

void AddedVocabulary::SplitPass(const Trie& trie, std::string_view text, bool parse_special,
                                std::vector<TextSegment>* out) const {
  size_t start_offset = 0;  // end of the previous accepted token
  size_t search = 0;        // where the trie resumes: after the previous match, even a dropped one
  size_t begin, end, index;
  while (trie.Find(text, search, &begin, &end, &index)) {
    search = end;
    const AddedToken& token = tokens_[index];
    if (!parse_special && token.special) continue;
    if (token.single_word && (EndsWithWord(text, begin) || StartsWithWord(text, end))) continue;
    size_t start = begin, stop = end;
    if (token.lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t prev;
        if (!IsWhiteSpace(CharBefore(text, s, &prev))) break;
        s = prev;
      }
      start = std::max(s, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        const Utf8Char c = ReadUtf8Char(text.substr(stop));
        if (c.kind != Utf8Char::kValid || !IsWhiteSpace(c.code_point)) break;
        stop += c.length;
      }
    }
    if (start_offset < start) out->push_back({text.substr(start_offset, start - start_offset), -1});
    out->push_back({text.substr(start, stop - start), token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out->push_back({text.substr(start_offset), -1});
}

void AddedVocabulary::Split(std::string_view text, bool parse_special,
                            std::vector<TextSegment>* out) const {
  if (text.empty()) return;
  if (normalized_trie_->empty()) {
    SplitPass(*raw_trie_, text, parse_special, out);
    return;
  }
  std::vector<TextSegment> first;
  SplitPass(*raw_trie_, text, parse_special, &first);
  for (const TextSegment& segment : first) {
    if (segment.id >= 0) {
      out->push_back(segment);
    } else {
      SplitPass(*normalized_trie_, segment.text, parse_special, out);
    }
  }
}

}  // namespace r2::tokenizer
