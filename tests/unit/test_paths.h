#pragma once
// Where tests find their data. Set by tests/CMakeLists.txt at compile time.
#include <string>

namespace r2::testing {
// The repository root (fixtures live in tests/golden/fixtures).
std::string SourceDir();
// ../shared beside the repository; may be absent on some machines (tests that need it skip).
std::string SharedDir();
// A fresh empty directory under the system temp dir, unique per call.
std::string MakeTempDir(const std::string& tag);
}  // namespace r2::testing
