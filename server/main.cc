// r2serve: one binary, subcommands registered by server/cmd_*.cc.
#include <cstdio>
#include <cstring>
#include <string>

#include "server/command.h"

namespace r2::server {

std::map<std::string, Command>& CommandRegistry() {
  static std::map<std::string, Command> registry;
  return registry;
}

namespace {
void PrintUsage(FILE* out) {
  std::fprintf(out, "usage: r2serve <command> [flags]\n\ncommands:\n");
  for (const auto& [name, command] : CommandRegistry()) {
    std::fprintf(out, "  %-16s %s\n", name.c_str(), command.summary.c_str());
  }
  std::fprintf(out, "\n`r2serve <command> --help` documents each command's flags.\n");
}
}  // namespace

}  // namespace r2::server

int main(int argc, char** argv) {
  using r2::server::CommandRegistry;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    r2::server::PrintUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  auto it = CommandRegistry().find(argv[1]);
  if (it == CommandRegistry().end()) {
    std::fprintf(stderr, "r2serve: unknown command '%s'\n\n", argv[1]);
    r2::server::PrintUsage(stderr);
    return 2;
  }
  return it->second.run(argc - 1, argv + 1);
}
