#include "engine/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/unicode_categories.h"
#include "engine/tokenizer/utf8.h"

namespace r2::tokenizer {
namespace {

absl::Status Unsupported(std::string_view pattern, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported regex construct ", Sv(what), " in pattern '", Sv(pattern), "'"));
}

// Oniguruma's \s: the White_Space property (PCRE2's \s also matches U+180E).
CodePointSet WhiteSpace() {
  return {{0x09, 0x0D},     {0x20, 0x20},     {0x85, 0x85},     {0xA0, 0xA0},     {0x1680, 0x1680},
          {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}};
}

// Oniguruma's \w: Letter, Mark, Decimal_Number, Connector_Punctuation.
CodePointSet WordChars() {
  CodePointSet set = *GeneralCategory("L");
  for (const char* name : {"M", "Nd", "Pc"}) set = Union(set, *GeneralCategory(name));
  return set;
}

// Parses the property name of \p{..} / \P{..} / \pL at pattern[i]; sets *used and *negated.
absl::StatusOr<CodePointSet> PropertyAt(std::string_view pattern, size_t i, size_t* used,
                                        bool* negated) {
  *negated = pattern[i + 1] == 'P';
  std::string_view name;
  if (i + 2 < pattern.size() && pattern[i + 2] == '{') {
    const size_t close = pattern.find('}', i + 3);
    if (close == std::string_view::npos) return Unsupported(pattern, "unterminated \\p{");
    name = pattern.substr(i + 3, close - i - 3);
    *used = close + 1 - i;
  } else if (i + 2 < pattern.size()) {
    name = pattern.substr(i + 2, 1);
    *used = 3;
  } else {
    return Unsupported(pattern, "\\p at the end");
  }
  if (!name.empty() && name[0] == '^') {
    *negated = !*negated;
    name.remove_prefix(1);
  }
  std::optional<CodePointSet> set = GeneralCategory(name);
  if (!set)
    return Unsupported(pattern, absl::StrCat("\\p{", Sv(name), "} (only general categories)"));
  return *std::move(set);
}

// Writes a set as a class (outside []) or as class items (inside []).
void AppendSet(const CodePointSet& set, bool negated, bool in_class, std::string* out) {
  const std::string items = ClassItems(negated && in_class ? Complement(set) : set);
  if (in_class) {
    *out += items;
  } else {
    absl::StrAppend(out, negated ? "[^" : "[", items, "]");
  }
}

// Translates the escape at pattern[i] ('\\') and returns how many bytes it used.
absl::StatusOr<size_t> TranslateEscape(std::string_view pattern, size_t i, bool in_class,
                                       std::string* out) {
  if (i + 1 >= pattern.size()) return absl::InvalidArgumentError("pattern ends with '\\'");
  const char c = pattern[i + 1];
  switch (c) {
    case 'p':
    case 'P': {
      size_t used = 0;
      bool negated = false;
      auto set = PropertyAt(pattern, i, &used, &negated);
      if (!set.ok()) return set.status();
      AppendSet(*set, negated, in_class, out);
      return used;
    }
    case 's':
    case 'S':
      AppendSet(WhiteSpace(), c == 'S', in_class, out);
      return 2;
    case 'w':
    case 'W':
      AppendSet(WordChars(), c == 'W', in_class, out);
      return 2;
    case 'd':
    case 'D':
      AppendSet(*GeneralCategory("Nd"), c == 'D', in_class, out);
      return 2;
    case 'h':
    case 'H':
    case 'b':
    case 'B':
    case 'R':
    case 'X':
    case 'K':
    case 'G':
      return Unsupported(pattern, absl::StrCat("\\", std::string(1, c)));
    case 'u': {  // Ruby \uHHHH
      if (i + 6 > pattern.size()) return Unsupported(pattern, "\\u");
      absl::StrAppend(out, "\\x{", Sv(pattern.substr(i + 2, 4)), "}");
      return 6;
    }
    default: {
      const size_t len = 1 + Utf8Length(static_cast<unsigned char>(c));
      if (i + len > pattern.size()) return absl::InvalidArgumentError("truncated escape");
      out->append(pattern.substr(i, len));
      return len;
    }
  }
}

}  // namespace

absl::StatusOr<std::string> TranslateOnigurumaPattern(std::string_view pattern) {
  if (!IsValidUtf8(pattern)) return absl::InvalidArgumentError("regex is not valid UTF-8");
  std::string out;
  bool in_class = false;
  size_t class_body = 0;  // index where the current class's items start
  size_t i = 0;
  while (i < pattern.size()) {
    const char c = pattern[i];
    if (c == '\\') {
      auto used = TranslateEscape(pattern, i, in_class, &out);
      if (!used.ok()) return used.status();
      i += *used;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      ++i;
      if (i < pattern.size() && pattern[i] == '^') out.push_back(pattern[i++]);
      class_body = i;
      continue;
    }
    if (in_class) {
      if (c == ']' && i != class_body) in_class = false;
      if (c == '[') return Unsupported(pattern, "nested class or [: :]");
      if (c == '&' && i + 1 < pattern.size() && pattern[i + 1] == '&') {
        return Unsupported(pattern, "class intersection &&");
      }
    }
    out.push_back(c);
    ++i;
  }
  if (in_class) return absl::InvalidArgumentError("unterminated character class");
  return out;
}

namespace {

// Per-thread match scratch: match data and a JIT stack large enough for long inputs.
struct MatchScratch {
  pcre2_match_data* data;
  pcre2_match_context* context;
  pcre2_jit_stack* jit_stack;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& Scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

std::string EscapeLiteral(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    const bool plain =
        u >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!plain) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> CompileTranslated(std::string pcre2_pattern,
                                                         std::string_view original) {
  pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre2_pattern.data()), pcre2_pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, cc);
  pcre2_compile_context_free(cc);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad regex '", Sv(original), "': ", Pcre2Message(error), " at offset ", offset));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT pcre2_match interprets: still fine
  return Regex::Wrap(code, std::move(pcre2_pattern));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern) {
  auto translated = TranslateOnigurumaPattern(pattern);
  if (!translated.ok()) return translated.status();
  return CompileTranslated(*std::move(translated), pattern);
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::CompileLiteral(std::string_view literal) {
  if (!IsValidUtf8(literal)) return absl::InvalidArgumentError("pattern is not valid UTF-8");
  return CompileTranslated(EscapeLiteral(literal), literal);
}

std::unique_ptr<Regex> Regex::Wrap(void* code, std::string pcre2_pattern) {
  auto regex = std::unique_ptr<Regex>(new Regex());
  regex->code_ = code;
  regex->pcre2_pattern_ = std::move(pcre2_pattern);
  return regex;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::Status Regex::FindAll(std::string_view subject, std::vector<ByteRange>* matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  MatchScratch& scratch = Scratch();
  const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const size_t n = subject.size();
  size_t pos = 0;
  std::optional<size_t> last_match_end;
  while (pos <= n) {
    const int rc =
        pcre2_match(code, text, n, pos, PCRE2_NO_UTF_CHECK, scratch.data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) return absl::ResourceExhaustedError("regex match failed: " + Pcre2Message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.data);
    const size_t begin = ov[0], end = ov[1];
    if (begin == end && last_match_end == end) {
      // Oniguruma skips an empty match right after the previous one and moves one character on.
      pos += pos < n ? Utf8Length(static_cast<unsigned char>(subject[pos])) : 1;
      continue;
    }
    matches->push_back({begin, end});
    pos = end;
    last_match_end = end;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Regex::MatchesAtStart(std::string_view subject) const {
  auto* code = static_cast<pcre2_code*>(code_);
  MatchScratch& scratch = Scratch();
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0,
                             PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, scratch.data, scratch.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) return absl::ResourceExhaustedError("regex match failed: " + Pcre2Message(rc));
  return true;
}

}  // namespace r2::tokenizer
