#include "lizard/cli/commands.h"

namespace lizard::cli {

void register_all(CLI::App& app) { register_info(app); }

}  // namespace lizard::cli
