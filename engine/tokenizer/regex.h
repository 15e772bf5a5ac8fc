#pragma once
// The regexes of tokenizer.json, run by PCRE2 (UTF + UCP, JIT-compiled) with the semantics of the
// Oniguruma engine that Hugging Face tokenizers uses: Ruby syntax (^ and $ match at lines, \s is
// the White_Space property, \w is letters, marks, decimal digits and connector punctuation) and
// Oniguruma's iteration over matches (an empty match right after the previous match is skipped).
// Constructs whose meaning differs between the two engines and that we do not translate (\h, \b,
// nested classes, \S or \W inside a class) are refused with an error.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace r2::tokenizer {

// A byte range [begin, end) of a subject.
struct ByteRange {
  size_t begin;
  size_t end;
};

class Regex {
 public:
  // Compiles an Oniguruma (Ruby syntax) pattern.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  // Compiles a pattern matching `literal` exactly (Split's String pattern).
  static absl::StatusOr<std::unique_ptr<Regex>> CompileLiteral(std::string_view literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends every match in `subject` (valid UTF-8) to *matches, left to right, as Oniguruma's
  // find_iter yields them. The subject is the whole string: look-arounds see nothing beyond it.
  absl::Status FindAll(std::string_view subject, std::vector<ByteRange>* matches) const;
  // True when the pattern matches at the very start of `subject`.
  absl::StatusOr<bool> MatchesAtStart(std::string_view subject) const;

  const std::string& pcre2_pattern() const { return pcre2_pattern_; }
  // Takes ownership of a compiled pcre2_code_8 (internal).
  static std::unique_ptr<Regex> Wrap(void* code, std::string pcre2_pattern);

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  std::string pcre2_pattern_;
};

// The PCRE2 pattern equivalent to an Oniguruma one (exposed for tests).
absl::StatusOr<std::string> TranslateOnigurumaPattern(std::string_view pattern);

}  // namespace r2::tokenizer
