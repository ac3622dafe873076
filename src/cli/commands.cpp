#include "lizard/cli/commands.h"

namespace lizard::cli {

void register_all(CLI::App& app) {
  register_info(app);
  register_prepare_data(app);
  register_train(app);
  register_bench(app);
  register_eval(app);
  register_generate(app);
  register_demo_data(app);
  register_export(app);
  register_logits(app);
  register_random_checkpoint(app);
}

}  // namespace lizard::cli
