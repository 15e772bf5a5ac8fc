#include "tests/unit/test_paths.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

namespace r2::testing {

std::string SourceDir() { return R2_SOURCE_DIR; }
std::string SharedDir() { return R2_SHARED_DIR; }

std::string MakeTempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path() /
             ("r2test-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace r2::testing
