#include "tests/unit/tokenizer/tokenizer_fixtures.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "tests/unit/test_paths.h"

namespace r2::tokenizer::testing {

std::string FixtureDir() { return r2::testing::SourceDir() + "/tests/golden/fixtures/tokenizer/"; }

std::string DeepSeekPath() {
  return r2::testing::SharedDir() + "/models/deepseek-v3-tokenizer/tokenizer.json";
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

const Tokenizer* LoadNamed(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(name);
  if (it != loaded.end()) return it->second.get();
  const std::string path = name == "deepseek_v3" ? DeepSeekPath() : FixtureDir() + name + ".json";
  if (name == "deepseek_v3" && ReadFileOrEmpty(path).empty()) return nullptr;
  auto tokenizer = Tokenizer::FromFile(path);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (!tokenizer.ok()) return nullptr;
  return (loaded[name] = *std::move(tokenizer)).get();
}

const std::vector<std::string>& Corpus() {
  static const std::vector<std::string>* corpus = [] {
    auto* lines = new std::vector<std::string>();
    std::istringstream in(ReadFileOrEmpty(FixtureDir() + "corpus.jsonl"));
    std::string line;
    while (std::getline(in, line)) lines->push_back(nlohmann::json::parse(line).get<std::string>());
    return lines;
  }();
  return *corpus;
}

const nlohmann::json& Goldens(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, nlohmann::json> loaded;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(name);
  if (it != loaded.end()) return it->second;
  const std::string text = ReadFileOrEmpty(FixtureDir() + "goldens_" + name + ".json");
  return loaded[name] = nlohmann::json::parse(text, nullptr, false);
}

}  // namespace r2::tokenizer::testing
