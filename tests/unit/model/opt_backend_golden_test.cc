// The whole tiny models through the optimized CPU backend (every instruction set this machine
// supports) against the transformers golden fixtures in tests/golden/fixtures/model: prefill
// logits at every position, step-by-step cached decode logits and the greedy continuation, with
// the golden test's tolerance.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/model/deepseek_model.h"
#include "engine/model/safetensors.h"
#include "engine/model/tiny_model.h"
#include "kernels/cpu/opt_backend.h"
#include "tests/unit/model/model_test_util.h"
#include "tests/unit/test_paths.h"

namespace r2::model {
namespace {

using testing::ArgMax;
using testing::MakeCache;
using testing::RelativeDiff;

constexpr double kTolerance = 1e-3;  // max |a - b| / max |b| per logits row (as golden_test.cc)

std::string FixtureDir() { return r2::testing::SourceDir() + "/tests/golden/fixtures/model"; }

// __metadata__ of a safetensors file (preset name and seed of the fixture).
nlohmann::json Metadata(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t size = 0;
  in.read(reinterpret_cast<char*>(&size), 8);
  if (!in || size > (100u << 20)) return {};
  std::string header(size, '\0');
  in.read(header.data(), static_cast<std::streamsize>(size));
  nlohmann::json json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  return json.is_object() && json.contains("__metadata__") ? json["__metadata__"]
                                                           : nlohmann::json{};
}

template <typename T>
std::vector<T> Read(const SafetensorsFile& file, const std::string& name) {
  auto view = file.Get(name);
  EXPECT_TRUE(view.ok()) << view.status();
  if (!view.ok()) return {};
  std::vector<T> values(view->numel());
  std::memcpy(values.data(), view->data, values.size() * sizeof(T));
  return values;
}

void ExpectRowsClose(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t r = 0; r * vocab < want.size(); ++r) {
    EXPECT_LE(RelativeDiff(absl::MakeConstSpan(got).subspan(r * vocab, vocab),
                           absl::MakeConstSpan(want).subspan(r * vocab, vocab)),
              kTolerance)
        << what << " row " << r;
  }
}

void CheckFixture(const std::string& path, CpuIsa isa) {
  const nlohmann::json meta = Metadata(path);
  const std::string preset = meta.contains("preset") ? meta["preset"].get<std::string>()
                                                     : std::filesystem::path(path).stem().string();
  auto options = TinyModelPreset(preset);
  ASSERT_TRUE(options.ok()) << options.status();
  if (meta.contains("seed")) options->seed = std::stoull(meta["seed"].get<std::string>());
  const std::string dir = r2::testing::MakeTempDir("opt-golden-" + preset);
  ASSERT_TRUE(WriteTinyModel(*options, dir).ok());
  auto backend = MakeCpuOptimizedBackend(isa);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto model = DeepseekModel::Load(dir, backend->get());
  ASSERT_TRUE(model.ok()) << model.status();
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const int64_t vocab = (*model)->config().vocab_size;
  int prompts = 0;
  for (; (*file)->Has("p" + std::to_string(prompts) + ".ids"); ++prompts) {
    const std::string p = "p" + std::to_string(prompts) + ".";
    const std::vector<int64_t> ids64 = Read<int64_t>(**file, p + "ids");
    const std::vector<int64_t> dec64 = Read<int64_t>(**file, p + "decode_ids");
    const std::vector<int32_t> ids(ids64.begin(), ids64.end()), decode(dec64.begin(), dec64.end());
    std::vector<int32_t> table(8);
    for (int32_t b = 0; b < 8; ++b) table[b] = 7 - b;
    auto cache = MakeCache(**model, 8, 16);
    SequenceInput seq{.token_ids = ids, .start_pos = 0, .block_table = table};
    auto prefill = (*model)->Forward({&seq, 1}, LogitsMode::kAll, *cache);
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    ExpectRowsClose(prefill->logits, Read<float>(**file, p + "prefill_logits"), vocab,
                    p + "prefill");
    // Cached decode of the greedy continuation, one token per step after the prefill.
    std::vector<float> before(prefill->logits.end() - vocab, prefill->logits.end());
    std::vector<float> steps;
    for (size_t i = 0; i < decode.size(); ++i) {
      EXPECT_EQ(ArgMax(before), decode[i]) << p << "greedy step " << i;
      SequenceInput one{.token_ids = absl::MakeConstSpan(&decode[i], 1),
                        .start_pos = static_cast<int64_t>(ids.size() + i),
                        .block_table = table};
      auto out = (*model)->Forward({&one, 1}, LogitsMode::kLastPerSequence, *cache);
      ASSERT_TRUE(out.ok()) << out.status();
      steps.insert(steps.end(), out->logits.begin(), out->logits.end());
      before.assign(out->logits.begin(), out->logits.end());
    }
    ExpectRowsClose(steps, Read<float>(**file, p + "decode_logits"), vocab, p + "decode");
  }
  EXPECT_GT(prompts, 0) << path;
}

TEST(OptBackendGoldenTest, TinyModelsMatchTransformersOnEverySupportedIsa) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(FixtureDir())) GTEST_SKIP() << "no model fixtures in " << FixtureDir();
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(FixtureDir())) {
    if (entry.path().extension() != ".safetensors") continue;
    for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
      if (!CpuIsaSupported(isa)) continue;
      SCOPED_TRACE(entry.path().string() + " on " + std::string(CpuIsaName(isa)));
      CheckFixture(entry.path().string(), isa);
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no *.safetensors fixtures in " << FixtureDir();
}

}  // namespace
}  // namespace r2::model
