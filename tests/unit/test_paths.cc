#include "tests/unit/test_paths.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace r2::testing {

std::string SourceDir() { return R2_SOURCE_DIR; }
std::string SharedDir() { return R2_SHARED_DIR; }

namespace {

// The directories MakeTempDir handed out in this process. They are removed when the test binary
// exits (a failing test's files stay when R2_KEEP_TEST_TMP=1), so a CI run does not fill /tmp
// with tiny checkpoints: each ctest process writes several.
class TempDirs {
 public:
  ~TempDirs() {
    const char* keep = std::getenv("R2_KEEP_TEST_TMP");
    if (keep != nullptr && std::string(keep) == "1") return;
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& dir : dirs_) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }
  void Add(const std::filesystem::path& dir) {
    std::lock_guard<std::mutex> lock(mu_);
    dirs_.push_back(dir);
  }

 private:
  std::mutex mu_;
  std::vector<std::filesystem::path> dirs_;
};

TempDirs& Registry() {
  static TempDirs dirs;
  return dirs;
}

}  // namespace

std::string MakeTempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path() /
             ("r2test-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  Registry().Add(dir);
  return dir.string();
}

}  // namespace r2::testing
