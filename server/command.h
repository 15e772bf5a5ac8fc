#pragma once
// Subcommands of the one r2serve binary. Each lives in its own server/cmd_*.cc and registers itself
// with a static R2_REGISTER_COMMAND; main() dispatches on argv[1].
#include <functional>
#include <map>
#include <string>

namespace r2::server {

struct Command {
  std::string summary;                  // one line for `r2serve --help`
  std::function<int(int, char**)> run;  // gets argv with the subcommand as argv[0]
};

std::map<std::string, Command>& CommandRegistry();

struct CommandRegistrar {
  CommandRegistrar(const std::string& name, Command command) {
    CommandRegistry()[name] = std::move(command);
  }
};

#define R2_REGISTER_COMMAND(name, summary, fn) \
  static ::r2::server::CommandRegistrar r2_command_registrar_##fn(name, {summary, fn})

}  // namespace r2::server
