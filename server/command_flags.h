#pragma once
// Flag handling shared by the subcommands. All flags of the one binary are absl flags (global);
// each subcommand documents and reads its own.
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace r2::server {

// absl flag names use underscores; this accepts the dashed spelling too (--max-tokens), up to a
// bare "--". argv[0] is kept.
std::vector<std::string> UnderscoreFlagNames(int argc, char** argv);

// True when argv asks for --help (or -h / -help) before any bare "--".
bool WantsHelp(int argc, char** argv);

// Prints `usage`, then every flag whose defining file name contains `defining_file` (e.g.
// "cmd_generate"), dashed, with its help text and default. Returns 0 (absl's own --help exits 1).
int PrintFlagHelp(absl::string_view usage, absl::string_view defining_file);

// UnderscoreFlagNames then absl::ParseCommandLine. Returns the positional arguments after argv[0].
// Unknown flags or bad values make absl print the problem and exit(1), as for any absl binary.
std::vector<std::string> ParseCommandFlags(int argc, char** argv);

}  // namespace r2::server
