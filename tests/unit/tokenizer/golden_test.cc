// Token ids, decoded text and pre-tokenization against Hugging Face tokenizers, from the goldens
// of tests/golden/gen_tokenizer_goldens.py, for DeepSeek-V3 and three small fixture tokenizers.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/unit/tokenizer/tokenizer_fixtures.h"

namespace r2::tokenizer::testing {
namespace {

using nlohmann::json;

constexpr int kMaxReported = 5;  // mismatches printed in full per test

std::vector<std::string> CorpusFor(const json& goldens) {
  const size_t step = goldens.value("corpus_step", 1);
  std::vector<std::string> out;
  for (size_t i = 0; i < Corpus().size(); i += step) out.push_back(Corpus()[i]);
  return out;
}

std::vector<int32_t> Ids(const json& list) { return list.get<std::vector<int32_t>>(); }

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

uint64_t Fnv1a(const std::string& data) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001B3ULL;
  }
  return h;
}

std::string Hex64(uint64_t v) {
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string JoinNumbers(const std::vector<size_t>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(values[i]);
  }
  return out;
}

// The text the generator builds for code points [lo, hi) (see sweep_text there).
std::string SweepText(char32_t lo, char32_t hi) {
  std::string text;
  for (char32_t cp = lo; cp < hi; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string c;
    AppendUtf8(cp, &c);
    text += c + "a" + c + " " + c + "1" + c + "\n" + c + "x ";
  }
  return text;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    R2_SKIP_IF_NO_DEEPSEEK(GetParam());
    goldens_ = &Goldens(GetParam());
    ASSERT_FALSE(goldens_->is_discarded()) << "goldens_" << GetParam() << ".json missing or bad";
    tokenizer_ = LoadNamed(GetParam());
    ASSERT_NE(tokenizer_, nullptr);
    corpus_ = CorpusFor(*goldens_);
    ASSERT_EQ(corpus_.size(), (*goldens_)["encode"].size());
  }
  std::vector<int32_t> Encode(const std::string& text, bool add_special = false,
                              bool parse_special = true) {
    auto ids = tokenizer_->Encode(text, add_special, parse_special);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>();
  }
  // Whether the tokenizer gives back its input (not with an added prefix space or removed text).
  bool RoundTrips() const { return GetParam() == "deepseek_v3" || GetParam() == "gpt2_style"; }

  const json* goldens_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  std::vector<std::string> corpus_;
};

TEST_P(GoldenTest, EncodeEqualsHuggingFace) {
  int mismatches = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const std::vector<int32_t> expected = Ids((*goldens_)["encode"][i]);
    const std::vector<int32_t> actual = Encode(corpus_[i]);
    if (actual != expected && ++mismatches <= kMaxReported) {
      ADD_FAILURE() << "corpus line " << i << " " << json(corpus_[i]).dump() << "\n  expected "
                    << json(expected).dump() << "\n  actual   " << json(actual).dump();
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << corpus_.size() << " strings";
}

TEST_P(GoldenTest, VocabSizeEqualsHuggingFace) {
  EXPECT_EQ(tokenizer_->vocab_size(), (*goldens_)["vocab_size"].get<int32_t>());
}

TEST_P(GoldenTest, EncodeWithSpecialTokens) {
  const bool config_bos = tokenizer_->config().add_bos_token.has_value();
  for (const auto& [index, ids] : (*goldens_)["encode_with_special"].items()) {
    std::vector<int32_t> expected = Ids(ids);
    // `tokenizers` alone applies the file's post-processor; with add_bos_token in
    // tokenizer_config.json (DeepSeek) transformers puts BOS first instead (see WithBos).
    if (config_bos) expected.insert(expected.begin(), *tokenizer_->bos_id());
    const std::string& text = corpus_[std::stoul(index)];
    EXPECT_EQ(Encode(text, /*add_special=*/true), expected) << json(text).dump();
  }
}

TEST_P(GoldenTest, EncodeWithoutParsingSpecialTokens) {
  for (const auto& [index, ids] : (*goldens_)["encode_no_parse_special"].items()) {
    const std::string& text = corpus_[std::stoul(index)];
    EXPECT_EQ(Encode(text, false, /*parse_special=*/false), Ids(ids)) << json(text).dump();
  }
}

TEST_P(GoldenTest, InvalidUtf8EncodesAsItsReplacement) {
  for (const json& c : (*goldens_)["invalid_utf8"]) {
    const std::string bytes = FromHex(c["hex"].get<std::string>());
    std::string replaced;
    AppendUtf8Lossy(bytes, &replaced);
    EXPECT_EQ(replaced, c["replaced"].get<std::string>()) << c["hex"];
    EXPECT_EQ(Encode(bytes), Ids(c["ids"])) << c["hex"];
  }
}

TEST_P(GoldenTest, DecodeEqualsHuggingFace) {
  for (const json& c : (*goldens_)["decode"]) {
    const std::vector<int32_t> ids = Ids(c["ids"]);
    EXPECT_EQ(tokenizer_->Decode(ids, false), c["text"].get<std::string>()) << c["ids"];
    EXPECT_EQ(tokenizer_->Decode(ids, true), c["text_skip_special"].get<std::string>()) << c["ids"];
  }
}

TEST_P(GoldenTest, DecodeOfEncodeGivesTheText) {
  if (!RoundTrips()) GTEST_SKIP() << "this fixture adds a prefix space or removes text";
  for (const std::string& text : corpus_) {
    EXPECT_EQ(tokenizer_->Decode(Encode(text)), text) << json(text).dump();
  }
}

TEST_P(GoldenTest, StreamingDecodeEqualsDecode) {
  for (bool skip_special : {false, true}) {
    IncrementalDetokenizer stream(*tokenizer_, skip_special);
    for (size_t i = 0; i < corpus_.size(); ++i) {
      const std::vector<int32_t> ids = Ids((*goldens_)["encode"][i]);
      std::string streamed;
      for (int32_t id : ids) {
        const std::string piece = stream.Add(id);
        ASSERT_TRUE(IsValidUtf8(piece)) << "line " << i;
        streamed += piece;
      }
      streamed += stream.Flush();
      ASSERT_EQ(streamed, tokenizer_->Decode(ids, skip_special)) << "line " << i;
    }
  }
}

TEST_P(GoldenTest, EveryCodePointPreTokenizesAndEncodesAsHuggingFace) {
  if (!goldens_->contains("sweep")) GTEST_SKIP() << "no sweep goldens for this fixture";
  int mismatches = 0;
  int row_index = 0;
  for (const json& row : (*goldens_)["sweep"]) {
    if (row_index++ % kSampleEvery != 0) continue;
    const char32_t lo = row[0].get<uint32_t>(), hi = row[1].get<uint32_t>();
    const std::string text = SweepText(lo, hi);
    auto pieces = tokenizer_->PreTokenize(text);
    ASSERT_TRUE(pieces.ok()) << pieces.status();
    std::vector<size_t> ends;
    size_t end = 0;
    for (const std::string& piece : *pieces) ends.push_back(end += piece.size());
    const std::vector<int32_t> ids = Encode(text);
    std::vector<size_t> id_values(ids.begin(), ids.end());
    const bool same = Hex64(Fnv1a(JoinNumbers(ends))) == row[2].get<std::string>() &&
                      Hex64(Fnv1a(JoinNumbers(id_values))) == row[3].get<std::string>() &&
                      ids.size() == row[4].get<size_t>();
    if (!same && ++mismatches <= kMaxReported) {
      ADD_FAILURE() << "code points U+" << std::hex << uint32_t{lo} << "..U+" << uint32_t{hi}
                    << std::dec << ": pre-tokenization or ids differ from Hugging Face ("
                    << ids.size() << " ids, expected " << row[4] << ")";
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(DeepSeekGolden, WithBosMatchesTransformers) {
  R2_SKIP_IF_NO_DEEPSEEK(std::string("deepseek_v3"));
  const Tokenizer* tokenizer = LoadNamed("deepseek_v3");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_TRUE(tokenizer->add_bos());
  EXPECT_EQ(tokenizer->bos_id(), 0);
  EXPECT_EQ(tokenizer->eos_id(), 1);
  EXPECT_EQ(tokenizer->vocab_size(), 128815);
  EXPECT_EQ(tokenizer->config().model_max_length, 131072);
  ASSERT_TRUE(tokenizer->config().chat_template.has_value());
  for (const json& c : Goldens("deepseek_v3")["with_bos"]) {
    auto ids = tokenizer->Encode(c["text"].get<std::string>(), /*add_special_tokens=*/true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, Ids(c["ids"])) << c["text"];
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, GoldenTest,
                         ::testing::Values("deepseek_v3", "gpt2_style", "variant_prefix",
                                           "variant_splits"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace r2::tokenizer::testing
