// libFuzzer target for engine/tokenizer: encodes arbitrary bytes with the GPT-2-style fixture
// tokenizer and, when ../shared is present, the DeepSeek-V3 one, and checks that
//   - Encode never fails or crashes, and decoding gives back the text (for invalid UTF-8: its
//     U+FFFD replacement),
//   - streaming detokenization equals Decode, also for the input read as arbitrary token ids,
//   - an input that starts with '{' is also parsed as a tokenizer.json (must not crash).
// Tokenizer files: $R2_TOKENIZER_FUZZ_FIXTURE (default: the fixture beside this source file,
// tests/golden/fixtures/tokenizer/gpt2_style.json, located via __FILE__) and
// $R2_TOKENIZER_FUZZ_DEEPSEEK (default: <repo>/../shared/models/deepseek-v3-tokenizer/
// tokenizer.json; skipped when absent).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace {

using r2::tokenizer::IncrementalDetokenizer;
using r2::tokenizer::Tokenizer;

std::string PathFromEnv(const char* var, const std::filesystem::path& fallback) {
  const char* value = std::getenv(var);
  return value != nullptr ? value : fallback.string();
}

std::vector<std::unique_ptr<Tokenizer>>& Tokenizers() {
  static auto* loaded = [] {
    auto* out = new std::vector<std::unique_ptr<Tokenizer>>();
    const std::filesystem::path repo =
        std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
    const std::string fixture = PathFromEnv(
        "R2_TOKENIZER_FUZZ_FIXTURE", repo / "tests/golden/fixtures/tokenizer/gpt2_style.json");
    const std::string deepseek =
        PathFromEnv("R2_TOKENIZER_FUZZ_DEEPSEEK",
                    repo.parent_path() / "shared/models/deepseek-v3-tokenizer/tokenizer.json");
    for (const std::string& path : {fixture, deepseek}) {
      auto tokenizer = Tokenizer::FromFile(path);
      if (tokenizer.ok()) {
        out->push_back(*std::move(tokenizer));
      } else if (path == fixture) {
        std::fprintf(stderr, "cannot load %s: %s\n", path.c_str(),
                     std::string(tokenizer.status().message()).c_str());
        std::abort();
      }
    }
    std::fprintf(stderr, "tokenizer_fuzz: %zu tokenizer(s) loaded\n", out->size());
    return out;
  }();
  return *loaded;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", what);
    std::abort();
  }
}

std::string Stream(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip) {
  IncrementalDetokenizer stream(tokenizer, skip);
  std::string text;
  for (int32_t id : ids) {
    const std::string piece = stream.Add(id);
    Check(r2::tokenizer::IsValidUtf8(piece), "streamed text is not valid UTF-8");
    text += piece;
  }
  return text + stream.Flush();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (!input.empty() && input[0] == '{') {
    auto parsed = Tokenizer::FromJson(input, "fuzz.json");
    if (parsed.ok()) (void)(*parsed)->Encode("fuzz", true);
  }
  std::string expected;
  r2::tokenizer::AppendUtf8Lossy(input, &expected);
  const bool parse_special = size % 2 == 0;
  for (const auto& tokenizer : Tokenizers()) {
    auto ids = tokenizer->Encode(input, /*add_special_tokens=*/false, parse_special);
    Check(ids.ok(), "Encode failed");
    Check(tokenizer->Decode(*ids) == expected, "Decode(Encode(s)) != s");
    Check(Stream(*tokenizer, *ids, false) == expected, "streamed != Decode");
    // The same bytes read as token ids (any value, valid or not).
    std::vector<int32_t> raw(size / 4);
    if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * 4);
    for (int32_t& id : raw) id %= tokenizer->vocab_size() + 8;
    for (bool skip : {false, true}) {
      Check(Stream(*tokenizer, raw, skip) == tokenizer->Decode(raw, skip), "stream != Decode");
    }
  }
  return 0;
}
