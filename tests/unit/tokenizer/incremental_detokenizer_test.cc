#include "engine/tokenizer/incremental_detokenizer.h"

#include <gtest/gtest.h>

#include <random>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/utf8.h"
#include "tests/unit/tokenizer/tokenizer_fixtures.h"

namespace r2::tokenizer::testing {
namespace {

// The id of the single-byte token for `byte` in the GPT-2-style fixture.
int32_t ByteId(const Tokenizer& t, unsigned char byte) {
  std::string ch;
  AppendUtf8(ByteToChar(byte), &ch);
  return *t.TokenToId(ch);
}

TEST(IncrementalDetokenizer, HoldsPartialCharacters) {
  const Tokenizer* t = LoadNamed("gpt2_style");
  ASSERT_NE(t, nullptr);
  IncrementalDetokenizer stream(*t);
  // "€" is E2 82 AC: nothing comes out until the last byte.
  EXPECT_EQ(stream.Add(ByteId(*t, 0xE2)), "");
  EXPECT_EQ(stream.pending_bytes(), 1u);
  EXPECT_EQ(stream.Add(ByteId(*t, 0x82)), "");
  EXPECT_EQ(stream.Add(ByteId(*t, 0xAC)), "€");
  EXPECT_EQ(stream.pending_bytes(), 0u);
  // A broken character becomes U+FFFD as soon as it is known to be broken.
  EXPECT_EQ(stream.Add(ByteId(*t, 0xE2)), "");
  EXPECT_EQ(stream.Add(ByteId(*t, 'a')),
            "\xEF\xBF\xBD"
            "a");
  // An incomplete character at the end becomes U+FFFD on Flush, which resets the stream.
  EXPECT_EQ(stream.Add(ByteId(*t, 0xF0)), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.Flush(), "");
  EXPECT_EQ(stream.Add(ByteId(*t, 'b')), "b");
}

TEST(IncrementalDetokenizer, SkipsSpecialTokensAndUnknownIds) {
  const Tokenizer* t = LoadNamed("gpt2_style");
  ASSERT_NE(t, nullptr);
  const int32_t eot = *t->TokenToId("<|endoftext|>");
  IncrementalDetokenizer keep(*t, false), skip(*t, true);
  EXPECT_EQ(keep.Add(eot), "<|endoftext|>");
  EXPECT_EQ(skip.Add(eot), "");
  EXPECT_EQ(keep.Add(-5), "");
  EXPECT_EQ(keep.Add(1 << 30), "");
}

TEST(IncrementalDetokenizer, RandomIdsEqualDecode) {
  const Tokenizer* t = LoadNamed("gpt2_style");
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> ids(rng() % 40);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % (t->vocab_size() + 3)) - 1;
    for (bool skip : {false, true}) {
      IncrementalDetokenizer stream(*t, skip);
      std::string text;
      for (int32_t id : ids) {
        const std::string piece = stream.Add(id);
        ASSERT_TRUE(IsValidUtf8(piece));
        text += piece;
      }
      text += stream.Flush();
      ASSERT_EQ(text, t->Decode(ids, skip));
    }
  }
}

}  // namespace
}  // namespace r2::tokenizer::testing
