// Tokenizer throughput: encoding a deterministic English-like text (about 500 KB) as one string
// and line by line, decoding, and streaming detokenization, with the DeepSeek-V3 tokenizer (when
// ../shared is present) and the small GPT-2-style fixture. tests/bench/tokenizer_hf_bench.py runs
// this binary and Hugging Face tokenizers on the same text; see docs/perf/tokenizer.md.
//
//   r2_tokenizer_bench [--dump_corpus=PATH] [benchmark flags]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/unit/test_paths.h"

namespace {

using r2::tokenizer::IncrementalDetokenizer;
using r2::tokenizer::Tokenizer;

constexpr const char* kWords[] = {"the",
                                  "of",
                                  "and",
                                  "to",
                                  "in",
                                  "is",
                                  "was",
                                  "for",
                                  "on",
                                  "that",
                                  "with",
                                  "as",
                                  "by",
                                  "it",
                                  "at",
                                  "from",
                                  "be",
                                  "this",
                                  "are",
                                  "or",
                                  "an",
                                  "have",
                                  "not",
                                  "which",
                                  "but",
                                  "had",
                                  "they",
                                  "you",
                                  "were",
                                  "his",
                                  "her",
                                  "their",
                                  "one",
                                  "all",
                                  "there",
                                  "can",
                                  "been",
                                  "has",
                                  "more",
                                  "if",
                                  "will",
                                  "would",
                                  "when",
                                  "who",
                                  "what",
                                  "so",
                                  "up",
                                  "out",
                                  "about",
                                  "into",
                                  "than",
                                  "them",
                                  "only",
                                  "other",
                                  "new",
                                  "some",
                                  "could",
                                  "time",
                                  "these",
                                  "two",
                                  "may",
                                  "first",
                                  "then",
                                  "do",
                                  "any",
                                  "like",
                                  "my",
                                  "now",
                                  "over",
                                  "such",
                                  "our",
                                  "man",
                                  "me",
                                  "even",
                                  "most",
                                  "made",
                                  "after",
                                  "also",
                                  "did",
                                  "many",
                                  "before",
                                  "must",
                                  "through",
                                  "back",
                                  "years",
                                  "where",
                                  "much",
                                  "your",
                                  "way",
                                  "well",
                                  "down",
                                  "should",
                                  "because",
                                  "each",
                                  "just",
                                  "those",
                                  "people",
                                  "how",
                                  "too",
                                  "little",
                                  "state",
                                  "good",
                                  "very",
                                  "make",
                                  "world",
                                  "still",
                                  "own",
                                  "see",
                                  "men",
                                  "work",
                                  "long",
                                  "get",
                                  "here",
                                  "between",
                                  "both",
                                  "life",
                                  "being",
                                  "under",
                                  "never",
                                  "day",
                                  "same",
                                  "another",
                                  "know",
                                  "while",
                                  "last",
                                  "might",
                                  "great",
                                  "old",
                                  "year",
                                  "off",
                                  "come",
                                  "since",
                                  "against",
                                  "go",
                                  "came",
                                  "right",
                                  "used",
                                  "take",
                                  "three",
                                  "government",
                                  "development",
                                  "information",
                                  "university",
                                  "particular",
                                  "experience",
                                  "understanding",
                                  "environmental",
                                  "responsibility",
                                  "international",
                                  "tokenizer",
                                  "inference",
                                  "attention",
                                  "latency",
                                  "throughput",
                                  "benchmark",
                                  "quantized",
                                  "Mr.",
                                  "London",
                                  "Tuesday",
                                  "September",
                                  "however",
                                  "although",
                                  "nevertheless"};
constexpr const char* kEnds[] = {".", ".", ".", ",", "?", "!", ";", ":", "..."};

// A deterministic English-like text of about `bytes` bytes: sentences of Zipf-like words with
// punctuation, numbers, quotes, and paragraphs separated by blank lines.
std::string EnglishCorpus(size_t bytes) {
  uint64_t state = 0x2545F4914F6CDD1DULL;
  auto next = [&state](uint32_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>((state >> 33) % n);
  };
  const uint32_t num_words = sizeof(kWords) / sizeof(kWords[0]);
  std::string text;
  while (text.size() < bytes) {
    const uint32_t sentences = 3 + next(6);
    for (uint32_t s = 0; s < sentences; ++s) {
      const uint32_t words = 5 + next(16);
      for (uint32_t w = 0; w < words; ++w) {
        const uint32_t r = next(num_words);
        std::string word = kWords[r * r / num_words];  // Zipf-like: small indices more often
        if (w == 0) word[0] = static_cast<char>(toupper(word[0]));
        if (next(40) == 0) word = std::to_string(next(100000));
        if (next(60) == 0) word = "\"" + word + "\"";
        if (next(30) == 0) word += "'s";
        text += word;
        text += w + 1 == words ? kEnds[next(9)] : (next(12) == 0 ? ", " : " ");
      }
      text += s + 1 == sentences ? "" : " ";
    }
    text += "\n\n";
  }
  return text;
}

const std::string& Corpus() {
  static const std::string* text = new std::string(EnglishCorpus(512 * 1024));
  return *text;
}

const std::vector<std::string>& Lines() {
  static const auto* lines = [] {
    auto* out = new std::vector<std::string>();
    size_t start = 0;
    const std::string& text = Corpus();
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      if (end > start) out->push_back(text.substr(start, end - start));
      start = end + 1;
    }
    return out;
  }();
  return *lines;
}

const Tokenizer* Load(const std::string& which) {
  static std::unique_ptr<Tokenizer> deepseek, gpt2;
  std::unique_ptr<Tokenizer>& slot = which == "deepseek_v3" ? deepseek : gpt2;
  if (!slot) {
    const std::string path =
        which == "deepseek_v3"
            ? r2::testing::SharedDir() + "/models/deepseek-v3-tokenizer/tokenizer.json"
            : r2::testing::SourceDir() + "/tests/golden/fixtures/tokenizer/gpt2_style.json";
    auto loaded = Tokenizer::FromFile(path);
    if (!loaded.ok()) return nullptr;
    slot = *std::move(loaded);
  }
  return slot.get();
}

void SetRates(benchmark::State& state, size_t bytes, size_t tokens) {
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens"] = static_cast<double>(tokens);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

void BM_EncodeLongText(benchmark::State& state, const std::string& which) {
  const Tokenizer* tokenizer = Load(which);
  if (tokenizer == nullptr) return state.SkipWithError("tokenizer not found");
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = tokenizer->Encode(Corpus(), /*add_special_tokens=*/false);
    tokens = ids->size();
    benchmark::DoNotOptimize(ids);
  }
  SetRates(state, Corpus().size(), tokens);
}

void BM_EncodeLines(benchmark::State& state, const std::string& which) {
  const Tokenizer* tokenizer = Load(which);
  if (tokenizer == nullptr) return state.SkipWithError("tokenizer not found");
  size_t tokens = 0, bytes = 0;
  for (auto _ : state) {
    tokens = bytes = 0;
    for (const std::string& line : Lines()) {
      auto ids = tokenizer->Encode(line, /*add_special_tokens=*/false);
      tokens += ids->size();
      bytes += line.size();
      benchmark::DoNotOptimize(ids);
    }
  }
  SetRates(state, bytes, tokens);
}

void BM_Decode(benchmark::State& state, const std::string& which) {
  const Tokenizer* tokenizer = Load(which);
  if (tokenizer == nullptr) return state.SkipWithError("tokenizer not found");
  const std::vector<int32_t> ids = *tokenizer->Encode(Corpus(), false);
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer->Decode(ids));
  SetRates(state, Corpus().size(), ids.size());
}

void BM_StreamDetokenize(benchmark::State& state, const std::string& which) {
  const Tokenizer* tokenizer = Load(which);
  if (tokenizer == nullptr) return state.SkipWithError("tokenizer not found");
  const std::vector<int32_t> ids = *tokenizer->Encode(Corpus(), false);
  std::string out;
  for (auto _ : state) {
    IncrementalDetokenizer stream(*tokenizer);
    out.clear();
    for (int32_t id : ids) stream.Add(id, &out);
    out += stream.Flush();
    benchmark::DoNotOptimize(out);
  }
  SetRates(state, Corpus().size(), ids.size());
}

void BM_Load(benchmark::State& state, const std::string& which) {
  const std::string path =
      which == "deepseek_v3"
          ? r2::testing::SharedDir() + "/models/deepseek-v3-tokenizer/tokenizer.json"
          : r2::testing::SourceDir() + "/tests/golden/fixtures/tokenizer/gpt2_style.json";
  for (auto _ : state) {
    auto loaded = Tokenizer::FromFile(path);
    if (!loaded.ok()) return state.SkipWithError("tokenizer not found");
    benchmark::DoNotOptimize(loaded);
  }
}

void RegisterAll() {
  for (const std::string which : {"deepseek_v3", "gpt2_style"}) {
    benchmark::RegisterBenchmark(("EncodeLongText/" + which).c_str(), BM_EncodeLongText, which)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("EncodeLines/" + which).c_str(), BM_EncodeLines, which)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("Decode/" + which).c_str(), BM_Decode, which)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("StreamDetokenize/" + which).c_str(), BM_StreamDetokenize, which)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("Load/" + which).c_str(), BM_Load, which)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(3);
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--dump_corpus=", 14) == 0) {
      std::ofstream(argv[i] + 14, std::ios::binary) << Corpus();
      return 0;
    }
  }
  RegisterAll();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
