#include "server/command_flags.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"

namespace r2::server {

std::vector<std::string> UnderscoreFlagNames(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 3 || a[0] != '-') continue;
    const size_t start = a[1] == '-' ? 2 : 1;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t k = start; k < end; ++k) {
      if (a[k] == '-') a[k] = '_';
    }
  }
  return args;
}

bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) return false;
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0 ||
        std::strcmp(argv[i], "-help") == 0) {
      return true;
    }
  }
  return false;
}

int PrintFlagHelp(absl::string_view usage, absl::string_view defining_file) {
  std::printf("usage: %s\n\nflags (dashes or underscores):\n", std::string(usage).c_str());
  std::vector<absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), defining_file)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
  for (const absl::CommandLineFlag* flag : flags) {
    std::string dashed(flag->Name());
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    const std::string def = flag->DefaultValue();
    std::printf("  --%s (default: %s)\n      %s\n", dashed.c_str(),
                def.empty() ? "\"\"" : def.c_str(), flag->Help().c_str());
  }
  return 0;
}

std::vector<std::string> ParseCommandFlags(int argc, char** argv) {
  std::vector<std::string> args = UnderscoreFlagNames(argc, argv);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  return std::vector<std::string>(rest.begin() + (rest.empty() ? 0 : 1), rest.end());
}

}  // namespace r2::server
