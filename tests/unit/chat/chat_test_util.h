#pragma once
// Helpers shared by the chat tests: reading fixtures and templates from the source tree.

#include <fstream>
#include <sstream>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/unit/test_paths.h"

namespace r2::chat::testing {

inline std::string ReadSourceFile(const std::string& relative_path) {
  std::ifstream in(r2::testing::SourceDir() + "/" + relative_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline nlohmann::ordered_json ReadJsonFixture(const std::string& relative_path) {
  return nlohmann::ordered_json::parse(ReadSourceFile(relative_path));
}

}  // namespace r2::chat::testing
