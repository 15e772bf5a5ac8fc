// The byte-level BPE trainer on corpora small enough to check by hand, and its speed.
#include "engine/tokenizer/bpe_trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/tiny_tokenizer.h"

namespace r2::tokenizer {
namespace {

using Merges = std::vector<std::pair<std::string, std::string>>;

BpeTrainerOptions Options(int32_t merges, int64_t min_frequency,
                          std::vector<std::string> specials = {}) {
  BpeTrainerOptions options;
  options.special_tokens = std::move(specials);
  options.vocab_size = static_cast<int32_t>(options.special_tokens.size()) + 256 + merges;
  options.min_frequency = min_frequency;
  options.pre_tokenizer = nlohmann::json::parse(DeepSeekV3PreTokenizerJson().dump());
  return options;
}

BpeVocabulary Train(const std::vector<std::string>& corpus, const BpeTrainerOptions& options) {
  absl::StatusOr<BpeVocabulary> vocab = TrainBpe(corpus, options);
  EXPECT_TRUE(vocab.ok()) << vocab.status();
  return vocab.ok() ? *std::move(vocab) : BpeVocabulary();
}

std::vector<std::string> Learned(const BpeVocabulary& vocab) {
  return std::vector<std::string>(vocab.tokens.begin() + vocab.num_special + 256,
                                  vocab.tokens.end());
}

TEST(BpeTrainer, IdsAreSpecialsThenBytesInAlphabetOrder) {
  BpeVocabulary vocab = Train({"x"}, Options(0, 2, {"<s>", "</s>"}));
  ASSERT_EQ(vocab.tokens.size(), 2u + 256u);
  EXPECT_EQ(vocab.num_special, 2);
  EXPECT_EQ(vocab.tokens[0], "<s>");
  EXPECT_EQ(vocab.tokens[1], "</s>");
  EXPECT_EQ(vocab.tokens[2], "!");             // byte 0x21, the first character of the alphabet
  EXPECT_EQ(vocab.tokens[2 + 93], "~");        // '!'..'~' are 94 characters
  EXPECT_EQ(vocab.tokens[2 + 188], "Ā");       // byte 0x00, the first remapped byte
  EXPECT_EQ(vocab.tokens[2 + 188 + 32], "Ġ");  // ' '
  EXPECT_TRUE(vocab.merges.empty());
}

// Words "ab", "abab", "abc" (one each): (a, b) is seen 4 times; then (ab, ab) and (ab, c) once
// each, a tie that the right token decides ("ab" < "c").
TEST(BpeTrainer, MergesTheMostFrequentPairThenBreaksTiesByTokenStrings) {
  BpeVocabulary vocab = Train({"ab", "abab", "abc"}, Options(10, 1));
  EXPECT_EQ(vocab.merges, (Merges{{"a", "b"}, {"ab", "ab"}, {"ab", "c"}}));
  EXPECT_EQ(Learned(vocab), (std::vector<std::string>{"ab", "abab", "abc"}));
}

TEST(BpeTrainer, StopsAtMinFrequencyAndAtVocabSize) {
  EXPECT_EQ(Train({"ab", "abab", "abc"}, Options(10, 2)).merges, (Merges{{"a", "b"}}));
  EXPECT_EQ(Train({"ab", "abab", "abc"}, Options(1, 1)).merges, (Merges{{"a", "b"}}));
  EXPECT_TRUE(Train({"ab", "abab", "abc"}, Options(0, 1)).merges.empty());
}

TEST(BpeTrainer, EqualCountsGoToTheSmallerLeftToken) {
  EXPECT_EQ(Train({"xy", "ab"}, Options(10, 1)).merges, (Merges{{"a", "b"}, {"x", "y"}}));
  EXPECT_EQ(Train({"ab", "xy"}, Options(10, 1)).merges, (Merges{{"a", "b"}, {"x", "y"}}));
}

// The DeepSeek pre-tokenizer gives "hello" once and " hello" twice. Every pair inside "hello" is
// seen 3 times and the smallest left token wins each tie; (Ġ, hello) comes last, seen twice.
TEST(BpeTrainer, LearnsByteLevelTokensWithinPreTokenizedWords) {
  BpeVocabulary vocab = Train({"hello hello hello"}, Options(100, 2));
  EXPECT_EQ(vocab.merges,
            (Merges{{"e", "l"}, {"el", "l"}, {"ell", "o"}, {"h", "ello"}, {"Ġ", "hello"}}));
  EXPECT_EQ(Learned(vocab), (std::vector<std::string>{"el", "ell", "ello", "hello", "Ġhello"}));
}

TEST(BpeTrainer, PairsNeverSpanPreTokenizedPieces) {
  // "a1" is two pieces ("a", "1"), so (a, 1) is never a pair however often it appears.
  BpeVocabulary vocab = Train({"a1 a1 a1 a1"}, Options(100, 1));
  for (const auto& [left, right] : vocab.merges) EXPECT_FALSE(left == "a" && right == "1");
}

TEST(BpeTrainer, SpecialTokenTextIsNotLearned) {
  BpeVocabulary vocab =
      Train({"<think>ab</think><think>ab</think>"}, Options(100, 1, {"<think>", "</think>"}));
  EXPECT_EQ(vocab.merges, (Merges{{"a", "b"}}));  // "<think" would be a piece otherwise
  EXPECT_EQ(vocab.tokens[0], "<think>");
  EXPECT_EQ(vocab.tokens[1], "</think>");
}

TEST(BpeTrainer, RepeatedMergeResultsReuseTheToken) {
  // "abc" learns (b, c) then (a, bc); "ab" + "c" spelled the same way must not add a second "abc".
  BpeVocabulary vocab = Train({"abc abc bc ab xabx"}, Options(100, 1));
  std::vector<std::string> learned = Learned(vocab);
  std::sort(learned.begin(), learned.end());
  EXPECT_TRUE(std::adjacent_find(learned.begin(), learned.end()) == learned.end());
}

TEST(BpeTrainer, RejectsBadOptions) {
  BpeTrainerOptions small = Options(0, 1, {"<s>"});
  small.vocab_size = 256;
  EXPECT_FALSE(TrainBpe({"a"}, small).ok());
  EXPECT_FALSE(TrainBpe({"a"}, Options(1, 1, {"<s>", "<s>"})).ok());
  EXPECT_FALSE(TrainBpe({"a"}, Options(1, 1, {""})).ok());
  EXPECT_FALSE(TrainBpe({"a"}, Options(1, 1, {"z"})).ok());  // spells a byte token
  BpeTrainerOptions no_pre = Options(1, 1);
  no_pre.pre_tokenizer = nullptr;
  EXPECT_FALSE(TrainBpe({"a"}, no_pre).ok());
}

TEST(BpeTrainer, IsDeterministic) {
  const BpeTrainerOptions options = Options(700, 2);
  BpeVocabulary a = Train(TinyTokenizerCorpus(), options);
  BpeVocabulary b = Train(TinyTokenizerCorpus(), options);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.merges, b.merges);
  ASSERT_EQ(a.merges.size(), 700u);
  EXPECT_EQ(a.merges[0], (std::pair<std::string, std::string>("Ġ", "t")));
}

// About 100 KB of text and 700 merges: well under a second in an optimized build.
TEST(BpeTrainer, TrainsAHundredKilobytesQuickly) {
  std::vector<std::string> corpus;
  size_t bytes = 0;
  for (int round = 0; bytes < 100 * 1024; ++round) {
    for (std::string document : TinyTokenizerCorpus()) {
      document += " round " + std::to_string(round) + "\n";
      bytes += document.size();
      corpus.push_back(std::move(document));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  BpeVocabulary vocab = Train(corpus, Options(700, 2));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(vocab.merges.size(), 700u);
  EXPECT_LT(seconds, 10.0);  // generous for sanitizer and debug builds
  std::printf("trained 700 merges on %zu bytes in %.3f s\n", bytes, seconds);
}

}  // namespace
}  // namespace r2::tokenizer
