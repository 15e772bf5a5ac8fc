#pragma once
// Added tokens (tokenizer.json "added_tokens"), found in the text before pre-tokenization exactly
// as Hugging Face's AddedVocabulary does: first the tokens with normalized=false over the whole
// text, then those with normalized=true over the text between them; each pass takes the
// leftmost-longest match, resumes after it, and honours single_word, lstrip and rstrip.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/string_map.h"

namespace r2::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A stretch of the input: an added token (id >= 0) or text to pre-tokenize (id < 0).
struct TextSegment {
  std::string_view text;
  int32_t id;
};

class AddedVocabulary {
 public:
  explicit AddedVocabulary(std::vector<AddedToken> tokens);
  ~AddedVocabulary();

  // Appends the segments of `text`. With parse_special false, special tokens are not matched
  // (Hugging Face's encode_special_tokens); their text stays plain text.
  void Split(std::string_view text, bool parse_special, std::vector<TextSegment>* out) const;

  const AddedToken* FindId(int32_t id) const;
  const AddedToken* FindContent(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  class Trie;
  void SplitPass(const Trie& trie, std::string_view text, bool parse_special,
                 std::vector<TextSegment>* out) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  StringMap<size_t> by_content_;
  std::unique_ptr<Trie> raw_trie_;         // normalized == false
  std::unique_ptr<Trie> normalized_trie_;  // normalized == true (no normalizer: same text)
};

}  // namespace r2::tokenizer
