#include "engine/tokenizer/utf8.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "engine/tokenizer/byte_level.h"

namespace r2::tokenizer {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

std::string Lossy(const std::string& bytes) {
  std::string out;
  AppendUtf8Lossy(bytes, &out);
  return out;
}

TEST(Utf8, ReadsCharacters) {
  EXPECT_EQ(ReadUtf8Char("a").kind, Utf8Char::kValid);
  const Utf8Char euro = ReadUtf8Char("\xE2\x82\xAC");
  EXPECT_EQ(euro.kind, Utf8Char::kValid);
  EXPECT_EQ(euro.code_point, 0x20AC);
  EXPECT_EQ(ReadUtf8Char("\xE2\x82").kind, Utf8Char::kIncomplete);
  EXPECT_EQ(ReadUtf8Char("\xE2\x82").length, 2);
  EXPECT_EQ(ReadUtf8Char("\xE2(").kind, Utf8Char::kInvalid);
  EXPECT_EQ(ReadUtf8Char("\xE2(").length, 1);
  EXPECT_EQ(ReadUtf8Char("\xED\xA0\x80").kind, Utf8Char::kInvalid);      // a surrogate
  EXPECT_EQ(ReadUtf8Char("\xC0\xAF").kind, Utf8Char::kInvalid);          // overlong
  EXPECT_EQ(ReadUtf8Char("\xF4\x90\x80\x80").kind, Utf8Char::kInvalid);  // > U+10FFFF
  EXPECT_EQ(ReadUtf8Char("\xF0\x9F\x98\x80").code_point, 0x1F600);
}

TEST(Utf8, ReplacesMaximalSubparts) {
  EXPECT_EQ(Lossy("abc"), "abc");
  EXPECT_EQ(Lossy("\xFF"), kFffd);
  EXPECT_EQ(Lossy("\xE4\xB8"
                  "A"),
            kFffd + "A");  // one U+FFFD for a truncated character
  EXPECT_EQ(Lossy("\xF0\x80\x80"), kFffd + kFffd + kFffd);
  EXPECT_EQ(Lossy("\xF0\x9F\x98"), kFffd);  // truncated at the end
  EXPECT_EQ(Lossy("a\xC2"), "a" + kFffd);
  EXPECT_EQ(Lossy(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST(Utf8, StreamingEqualsWholeOnRandomBytes) {
  std::mt19937 rng(7);
  const std::string pieces[] = {"a",    "\xE2", "\x82", "\xAC", "\xF0\x9F", "\x98\x80",
                                "\xFF", "\xC3", "\xA9", "\xED", "\xA0",     " "};
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> chunks;
    std::string whole;
    const int n = rng() % 12;
    for (int i = 0; i < n; ++i) {
      chunks.push_back(pieces[rng() % std::size(pieces)]);
      whole += chunks.back();
    }
    Utf8LossyDecoder decoder;
    std::string streamed;
    for (const std::string& c : chunks) {
      const size_t before = streamed.size();
      decoder.Feed(c, &streamed);
      ASSERT_TRUE(IsValidUtf8(streamed.substr(before)));
    }
    decoder.Flush(&streamed);
    ASSERT_EQ(streamed, Lossy(whole));
  }
}

TEST(Utf8, WhiteSpaceProperty) {
  for (char32_t c : {0x09, 0x0A, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028, 0x3000}) {
    EXPECT_TRUE(IsWhiteSpace(c)) << uint32_t{c};
  }
  for (char32_t c : {0x08, 0x1C, 0x41, 0x180E, 0x200B, 0xFEFF})
    EXPECT_FALSE(IsWhiteSpace(c)) << uint32_t{c};
}

TEST(ByteLevel, MapsEveryByteBothWays) {
  EXPECT_EQ(ByteToChar(' '), U'Ġ');
  EXPECT_EQ(ByteToChar('\n'), U'Ċ');
  EXPECT_EQ(ByteToChar('a'), U'a');
  for (int b = 0; b < 256; ++b) EXPECT_EQ(CharToByte(ByteToChar(b)), b);
  EXPECT_FALSE(CharToByte(U'｜').has_value());
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(ByteLevelToBytes(BytesToByteLevel(all)), all);
  EXPECT_FALSE(ByteLevelToBytes("<｜User｜>").has_value());
}

}  // namespace
}  // namespace r2::tokenizer
