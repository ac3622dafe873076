#include "lizard/cli/commands.h"

namespace lizard::cli {

void register_all(CLI::App& app) {
  register_info(app);
  register_prepare_data(app);
}

}  // namespace lizard::cli
