#include "engine/sampling/utf8.h"

#include "gtest/gtest.h"

namespace r2::sampling {
namespace {

TEST(Utf8Test, Validity) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\x80"));              // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE2\x28\xA1"));      // bad continuation
}

TEST(Utf8Test, CompletePrefixLength) {
  EXPECT_EQ(CompleteUtf8PrefixLength(""), 0u);
  EXPECT_EQ(CompleteUtf8PrefixLength("ab"), 2u);
  EXPECT_EQ(CompleteUtf8PrefixLength("a\xC3"), 1u);
  EXPECT_EQ(CompleteUtf8PrefixLength("a\xC3\xA9"), 3u);
  EXPECT_EQ(CompleteUtf8PrefixLength("a\xE2\x82"), 1u);
  EXPECT_EQ(CompleteUtf8PrefixLength("a\xF0\x9F\x98"), 1u);
  EXPECT_EQ(CompleteUtf8PrefixLength("a\xF0\x9F\x98\x80"), 5u);
  EXPECT_EQ(CompleteUtf8PrefixLength("a\xFF"), 2u);      // can never complete: not held
  EXPECT_EQ(CompleteUtf8PrefixLength("a\xE0\x80"), 3u);  // invalid second byte: not held
  EXPECT_EQ(CompleteUtf8PrefixLength("\x80\x80"), 2u);   // stray continuations: not held
}

}  // namespace
}  // namespace r2::sampling
