#include "engine/tokenizer/byte_level.h"

#include <array>

#include "engine/tokenizer/utf8.h"

namespace r2::tokenizer {
namespace {

bool StandsForItself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct ByteTables {
  std::array<char32_t, 256> to_char{};
  ByteTables() {
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) to_char[b] = StandsForItself(b) ? b : next++;
  }
};

const ByteTables& Tables() {
  static const ByteTables tables;
  return tables;
}

}  // namespace

char32_t ByteToChar(uint8_t byte) { return Tables().to_char[byte]; }

std::optional<uint8_t> CharToByte(char32_t ch) {
  if (ch < 0x100) {
    if (StandsForItself(static_cast<int>(ch))) return static_cast<uint8_t>(ch);
    return std::nullopt;
  }
  if (ch >= 0x100 + 68) return std::nullopt;
  // The (ch - 0x100)-th byte that does not stand for itself.
  int index = static_cast<int>(ch - 0x100);
  for (int b = 0; b < 256; ++b) {
    if (!StandsForItself(b) && index-- == 0) return static_cast<uint8_t>(b);
  }
  return std::nullopt;
}

std::string BytesToByteLevel(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) AppendUtf8(ByteToChar(static_cast<uint8_t>(c)), &out);
  return out;
}

std::optional<std::string> ByteLevelToBytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const Utf8Char c = ReadUtf8Char(text.substr(i));
    if (c.kind != Utf8Char::kValid) return std::nullopt;
    const std::optional<uint8_t> b = CharToByte(c.code_point);
    if (!b) return std::nullopt;
    out.push_back(static_cast<char>(*b));
    i += c.length;
  }
  return out;
}

}  // namespace r2::tokenizer
