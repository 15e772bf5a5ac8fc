// Encoding behaviours beyond the goldens: invalid UTF-8, long inputs, the two BPE merge loops,
// the regex translation, and thread safety.
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/utf8.h"
#include "tests/unit/tokenizer/tokenizer_fixtures.h"

namespace r2::tokenizer::testing {
namespace {

std::vector<const Tokenizer*> Available() {
  std::vector<const Tokenizer*> out;
  for (const char* name : {"deepseek_v3", "gpt2_style", "variant_prefix", "variant_splits"}) {
    if (std::string(name) == "deepseek_v3" && ReadFileOrEmpty(DeepSeekPath()).empty()) continue;
    if (const Tokenizer* t = LoadNamed(name)) out.push_back(t);
  }
  return out;
}

// Invalid UTF-8 is encoded as its U+FFFD replacement (which HF can encode; see the goldens).
TEST(Encode, InvalidUtf8EncodesAsReplacedText) {
  std::mt19937 rng(3);
  const std::string pieces[] = {"a",
                                " ",
                                "\xE2\x82\xAC",
                                "\xE2\x82",
                                "\xFF",
                                "\xC0\xAF",
                                "\xED\xA0\x80",
                                "<|endoftext|>",
                                "\xF0\x9F\x98",
                                "1",
                                "\n",
                                "\x80"};
  for (const Tokenizer* t : Available()) {
    for (int trial = 0; trial < 300 / kSampleEvery; ++trial) {
      std::string bytes;
      for (int i = rng() % 16; i > 0; --i) bytes += pieces[rng() % std::size(pieces)];
      std::string replaced;
      AppendUtf8Lossy(bytes, &replaced);
      auto a = t->Encode(bytes, true), b = t->Encode(replaced, true);
      ASSERT_TRUE(a.ok() && b.ok());
      ASSERT_EQ(*a, *b);
      ASSERT_EQ(t->PreTokenize(bytes)->size(), t->PreTokenize(replaced)->size());
    }
  }
}

TEST(Encode, LongRunsDoNotExhaustTheRegexEngine) {
  for (const Tokenizer* t : Available()) {
    for (const std::string unit : {" ", "a", "1", "\n", "é", "中", "!", " \t", "👍"}) {
      std::string text;
      while (text.size() < 100000 / kSampleEvery) text += unit;
      auto ids = t->Encode(text, false);
      ASSERT_TRUE(ids.ok()) << ids.status();
      if (t == LoadNamed("gpt2_style")) EXPECT_EQ(t->Decode(*ids), text);
    }
  }
}

TEST(Encode, EmptyText) {
  for (const Tokenizer* t : Available()) {
    EXPECT_TRUE(t->Encode("", false)->empty());
    EXPECT_EQ(t->Encode("", true)->size(), t->add_bos() ? 1u : 0u);
  }
}

TEST(Encode, ConcurrentEncodesAgree) {
  const std::vector<const Tokenizer*> tokenizers = Available();
  const std::vector<std::string>& corpus = Corpus();
  std::vector<std::vector<std::vector<int32_t>>> expected;
  for (const Tokenizer* t : tokenizers) {
    expected.emplace_back();
    for (size_t i = 0; i < corpus.size(); i += 5)
      expected.back().push_back(*t->Encode(corpus[i], false));
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t n = 0; n < tokenizers.size(); ++n) {
        const size_t which = (n + k) % tokenizers.size();
        for (size_t i = 0, j = 0; i < corpus.size(); i += 5, ++j) {
          if (*tokenizers[which]->Encode(corpus[i], false) != expected[which][j]) ++mismatches;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(BpeModel, HeapAndSmallMergeLoopsAgree) {
  const nlohmann::json spec =
      nlohmann::json::parse(ReadFileOrEmpty(FixtureDir() + "gpt2_style.json"))["model"];
  auto model = BpeModel::FromJson(spec, "gpt2_style");
  ASSERT_TRUE(model.ok()) << model.status();
  std::mt19937 rng(5);
  const std::string alphabet = "etaoinshrdlu ETAO.,'\xC3\xA9\xE4\xB8\xAD";
  for (int trial = 0; trial < 3000; ++trial) {
    std::string word;
    for (int i = rng() % 60; i > 0; --i) word += alphabet[rng() % alphabet.size()];
    std::vector<int32_t> small, heap, cached;
    (*model)->EncodeWordUncached(word, false, &small);
    (*model)->EncodeWordUncached(word, true, &heap);
    (*model)->EncodeWord(word, &cached);
    ASSERT_EQ(small, heap) << word;
    ASSERT_EQ(small, cached) << word;
  }
}

TEST(Regex, TranslatesOnigurumaClasses) {
  auto translated = TranslateOnigurumaPattern(R"(\s+(?!\S)|[^\s\p{L}]+)");
  ASSERT_TRUE(translated.ok());
  EXPECT_EQ(translated->find("\\p{"), std::string::npos);  // spelled out from the table
  auto regex = Regex::Compile(R"(\s+)");
  ASSERT_TRUE(regex.ok());
  std::vector<ByteRange> matches;
  ASSERT_TRUE((*regex)->FindAll("a \xE1\xA0\x8E b\xC2\x85", &matches).ok());
  // U+180E is not White_Space for Oniguruma (it is for PCRE2's own \s); U+0085 is.
  ASSERT_EQ(matches.size(), 3u);
  EXPECT_EQ(matches[0].begin, 1u);
  EXPECT_EQ(matches[0].end, 2u);
}

TEST(Regex, EmptyMatchesFollowOniguruma) {
  auto regex = Regex::Compile("x*");
  ASSERT_TRUE(regex.ok());
  std::vector<ByteRange> m;
  ASSERT_TRUE((*regex)->FindAll("axxb", &m).ok());
  ASSERT_EQ(m.size(), 3u);  // (0,0) (1,3) (4,4): no empty match right after "xx"
  EXPECT_EQ(m[0].begin, 0u);
  EXPECT_EQ(m[1].begin, 1u);
  EXPECT_EQ(m[1].end, 3u);
  EXPECT_EQ(m[2].begin, 4u);
}

}  // namespace
}  // namespace r2::tokenizer::testing
