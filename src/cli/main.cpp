// The `lizard` binary: subcommands over the library. Exceptions become exit codes:
// InputError -> 2 (bad input), any other error -> 1.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "cli_common.h"
#include "lizard/cli/commands.h"
#include "lizard/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"lizard: linearize Llama-family LLMs with the Lizard recipe (C++17/CUDA)"};
  app.set_version_flag("--version", std::string("lizard ") + LIZARD_VERSION);
  app.require_subcommand(1);
  lizard::cli::register_all(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return lizard::cli::exit_code_of(e);
  }
  return 0;
}
