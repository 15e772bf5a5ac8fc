#include "engine/chat/jinja_lexer.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace r2::chat::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Normalizes "\r\n" and "\r" to "\n", as Jinja2 does for template data and string literals.
std::string NormalizeNewlines(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

class Lexer {
 public:
  Lexer(std::string_view source, const LexerOptions& options)
      : src_(NormalizeNewlines(source)), options_(options) {
    if (!options_.keep_trailing_newline && !src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < src_.size()) {
      size_t start = FindTagStart(pos_);
      if (start == std::string::npos) {
        EmitText(src_.substr(pos_), line_);
        break;
      }
      char kind = src_[start + 1];
      char sign = start + 2 < src_.size() ? src_[start + 2] : '\0';
      std::string text = src_.substr(pos_, start - pos_);
      int text_line = line_;
      Advance(start - pos_);
      ApplyLeftStrip(kind, sign, &text);
      EmitText(std::move(text), text_line);
      absl::Status status = kind == '#' ? LexComment(sign) : LexTag(kind, sign);
      if (!status.ok()) return status;
    }
    out_.push_back(Token{Token::Type::kEof, "", line_});
    return std::move(out_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  void Advance(size_t n) {
    for (size_t i = 0; i < n && pos_ < src_.size(); ++i, ++pos_) {
      if (src_[pos_] == '\n') ++line_;
    }
  }

  void EmitText(std::string text, int line) {
    if (!text.empty()) out_.push_back(Token{Token::Type::kText, std::move(text), line});
  }

  // "-" strips all whitespace before the tag; lstrip_blocks strips a whitespace-only line prefix.
  void ApplyLeftStrip(char kind, char sign, std::string* text) const {
    if (sign == '-') {
      size_t end = text->size();
      while (end > 0 && IsSpace((*text)[end - 1])) --end;
      text->resize(end);
      return;
    }
    if (sign == '+' || kind == '{' || !options_.lstrip_blocks) return;
    size_t nl = text->rfind('\n');
    size_t line_start = nl == std::string::npos ? 0 : nl + 1;
    if (line_start == 0 && !line_starting_) return;
    for (size_t i = line_start; i < text->size(); ++i) {
      if (!IsSpace((*text)[i])) return;
    }
    text->resize(line_start);
  }

  // After a tag: "-" eats following whitespace; trim_blocks eats one newline after %} and #}.
  void ApplyRightStrip(char kind, char sign) {
    if (sign == '-') {
      size_t start = pos_;
      while (pos_ < src_.size() && IsSpace(src_[pos_])) Advance(1);
      line_starting_ = pos_ > start && src_[pos_ - 1] == '\n';
      return;
    }
    line_starting_ = false;
    if (sign == '+' || kind == '{' || !options_.trim_blocks) return;
    if (pos_ < src_.size() && src_[pos_] == '\n') {
      Advance(1);
      line_starting_ = true;
    }
  }

  absl::Status Error(const std::string& message, int line) const {
    return absl::InvalidArgumentError(
        absl::StrCat("template syntax error at line ", line, ": ", message));
  }

  absl::Status LexComment(char sign) {
    int line = line_;
    size_t content = pos_ + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
    size_t end = src_.find("#}", content);
    if (end == std::string::npos) return Error("unterminated comment", line);
    char close_sign =
        (end > content && (src_[end - 1] == '-' || src_[end - 1] == '+')) ? src_[end - 1] : '\0';
    Advance(end + 2 - pos_);
    ApplyRightStrip('#', close_sign);
    return absl::OkStatus();
  }

  absl::Status LexTag(char kind, char sign) {
    int line = line_;
    Advance(2 + ((sign == '-' || sign == '+') ? 1 : 0));
    if (kind == '%' && IsRawTag()) return LexRaw(line);
    out_.push_back(
        Token{kind == '{' ? Token::Type::kVarBegin : Token::Type::kBlockBegin, "", line});
    const char close = kind == '{' ? '}' : '%';
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) Advance(1);
      if (pos_ >= src_.size()) return Error("unterminated tag", line);
      char close_sign = '\0';
      if (depth == 0 && AtTagEnd(close, &close_sign)) {
        Advance(2 + (close_sign ? 1 : 0));
        out_.push_back(
            Token{kind == '{' ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", line_});
        ApplyRightStrip(kind, close_sign);
        return absl::OkStatus();
      }
      absl::Status status = LexToken(&depth);
      if (!status.ok()) return status;
    }
  }

  bool AtTagEnd(char close, char* sign) const {
    auto at = [&](size_t i) {
      return i + 1 < src_.size() && src_[i] == close && src_[i + 1] == '}';
    };
    if (at(pos_)) return true;
    if ((src_[pos_] == '-' || src_[pos_] == '+') && at(pos_ + 1)) {
      if (src_[pos_] == '+' && close == '}') return false;
      *sign = src_[pos_];
      return true;
    }
    return false;
  }

  // {% raw %} ... {% endraw %}: everything between is text.
  bool IsRawTag() const {
    size_t i = pos_;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    if (src_.compare(i, 3, "raw") != 0) return false;
    i += 3;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
    return src_.compare(i, 2, "%}") == 0;
  }

  absl::Status LexRaw(int line) {
    size_t open_end = src_.find("%}", pos_);
    char open_sign = src_[open_end - 1];
    Advance(open_end + 2 - pos_);
    ApplyRightStrip('%', open_sign == '-' || open_sign == '+' ? open_sign : '\0');
    size_t search = pos_;
    while (true) {
      size_t tag = src_.find("{%", search);
      if (tag == std::string::npos) return Error("unterminated raw block", line);
      size_t i = tag + 2;
      char sign = (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ? src_[i] : '\0';
      if (sign) ++i;
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      if (src_.compare(i, 6, "endraw") != 0) {
        search = tag + 2;
        continue;
      }
      i += 6;
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      char close_sign = (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ? src_[i] : '\0';
      if (close_sign) ++i;
      if (src_.compare(i, 2, "%}") != 0) return Error("malformed endraw tag", line_);
      std::string text = src_.substr(pos_, tag - pos_);
      int text_line = line_;
      ApplyLeftStrip('%', sign, &text);
      EmitText(std::move(text), text_line);
      Advance(i + 2 - pos_);
      ApplyRightStrip('%', close_sign);
      return absl::OkStatus();
    }
  }

  absl::Status LexToken(int* depth) {
    char c = src_[pos_];
    if (IsNameStart(c)) return LexName();
    if (IsDigit(c)) return LexNumber();
    if (c == '\'' || c == '"') return LexString(c);
    return LexOperator(depth);
  }

  absl::Status LexName() {
    size_t start = pos_;
    while (pos_ < src_.size() && IsNameChar(src_[pos_])) ++pos_;
    out_.push_back(Token{Token::Type::kName, src_.substr(start, pos_ - start), line_});
    return absl::OkStatus();
  }

  size_t ScanDigits(size_t i) const {
    while (i < src_.size() &&
           (IsDigit(src_[i]) || (src_[i] == '_' && i + 1 < src_.size() && IsDigit(src_[i + 1])))) {
      ++i;
    }
    return i;
  }

  absl::Status LexNumber() {
    size_t start = pos_;
    size_t i = ScanDigits(pos_);
    bool is_float = false;
    if (i + 1 < src_.size() && src_[i] == '.' && IsDigit(src_[i + 1])) {
      i = ScanDigits(i + 1);
      is_float = true;
    }
    if (i < src_.size() && (src_[i] == 'e' || src_[i] == 'E')) {
      size_t j = i + 1;
      if (j < src_.size() && (src_[j] == '+' || src_[j] == '-')) ++j;
      if (j < src_.size() && IsDigit(src_[j])) {
        i = ScanDigits(j);
        is_float = true;
      }
    }
    std::string digits;
    for (size_t k = start; k < i; ++k) {
      if (src_[k] != '_') digits.push_back(src_[k]);
    }
    pos_ = i;
    Token token{is_float ? Token::Type::kFloat : Token::Type::kInt, digits, line_};
    if (is_float) {
      token.float_value = std::strtod(digits.c_str(), nullptr);
    } else {
      auto res = std::from_chars(digits.data(), digits.data() + digits.size(), token.int_value);
      if (res.ec != std::errc()) return Error("integer literal too large", line_);
    }
    out_.push_back(std::move(token));
    return absl::OkStatus();
  }

  // Decodes one backslash escape at src_[i] == '\\'; returns the index after it.
  size_t DecodeEscape(size_t i, std::string* out) const {
    char e = i + 1 < src_.size() ? src_[i + 1] : '\0';
    switch (e) {
      case 'n':
        *out += '\n';
        return i + 2;
      case 't':
        *out += '\t';
        return i + 2;
      case 'r':
        *out += '\r';
        return i + 2;
      case 'b':
        *out += '\b';
        return i + 2;
      case 'f':
        *out += '\f';
        return i + 2;
      case 'v':
        *out += '\v';
        return i + 2;
      case 'a':
        *out += '\a';
        return i + 2;
      case '\\':
        *out += '\\';
        return i + 2;
      case '\'':
        *out += '\'';
        return i + 2;
      case '"':
        *out += '"';
        return i + 2;
      case '\n':
        return i + 2;  // line continuation
      case 'x':
        return DecodeHex(i, 2, out);
      case 'u':
        return DecodeHex(i, 4, out);
      case 'U':
        return DecodeHex(i, 8, out);
      default:
        if (e >= '0' && e <= '7') {
          uint32_t v = 0;
          size_t j = i + 1;
          for (int n = 0; n < 3 && j < src_.size() && src_[j] >= '0' && src_[j] <= '7'; ++n, ++j) {
            v = v * 8 + (src_[j] - '0');
          }
          tokenizer::AppendUtf8(static_cast<char32_t>(v), out);
          return j;
        }
        *out += '\\';  // unknown escapes keep the backslash, as in Python
        return i + 1;
    }
  }

  size_t DecodeHex(size_t i, int width, std::string* out) const {
    uint32_t v = 0;
    size_t j = i + 2;
    for (int n = 0; n < width; ++n, ++j) {
      if (j >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[j]))) {
        *out += '\\';
        return i + 1;
      }
      v = v * 16 + static_cast<uint32_t>(std::stoi(std::string(1, src_[j]), nullptr, 16));
    }
    if (v > 0x10FFFF) v = 0xFFFD;
    tokenizer::AppendUtf8(static_cast<char32_t>(v), out);
    return j;
  }

  absl::Status LexString(char quote) {
    int line = line_;
    std::string value;
    size_t i = pos_ + 1;
    while (true) {
      if (i >= src_.size()) return Error("unterminated string literal", line);
      char c = src_[i];
      if (c == quote) break;
      if (c == '\\') {
        i = DecodeEscape(i, &value);
      } else {
        value.push_back(c);
        ++i;
      }
    }
    Advance(i + 1 - pos_);
    out_.push_back(Token{Token::Type::kString, std::move(value), line});
    return absl::OkStatus();
  }

  absl::Status LexOperator(int* depth) {
    static constexpr const char* kTwoChar[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : kTwoChar) {
      if (src_.compare(pos_, 2, op) == 0) {
        out_.push_back(Token{Token::Type::kOp, op, line_});
        pos_ += 2;
        return absl::OkStatus();
      }
    }
    char c = src_[pos_];
    static constexpr std::string_view kSingle = "+-*/%~<>=.,:|()[]{}";
    if (kSingle.find(c) == std::string_view::npos) {
      return Error(absl::StrCat("unexpected character '", std::string(1, c), "'"), line_);
    }
    if (c == '(' || c == '[' || c == '{') ++*depth;
    if ((c == ')' || c == ']' || c == '}') && *depth > 0) --*depth;
    out_.push_back(Token{Token::Type::kOp, std::string(1, c), line_});
    ++pos_;
    return absl::OkStatus();
  }

  std::string src_;
  LexerOptions options_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> out_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source, const LexerOptions& options) {
  return Lexer(source, options).Run();
}

}  // namespace r2::chat::jinja
