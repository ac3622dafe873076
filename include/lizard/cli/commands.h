// Subcommand registration. Each subcommand lives in src/cli/<name>.cpp and registers itself
// here; its callback runs inside App::parse, so exceptions reach main's handler.
#pragma once

namespace CLI {
class App;
}

namespace lizard::cli {

void register_all(CLI::App& app);
void register_info(CLI::App& app);
void register_prepare_data(CLI::App& app);
void register_train(CLI::App& app);
void register_bench(CLI::App& app);
void register_bench_step(CLI::App& bench);  ///< `lizard bench step` (src/cli/bench_step.cpp)
void register_eval(CLI::App& app);
void register_generate(CLI::App& app);
void register_demo_data(CLI::App& app);
void register_export(CLI::App& app);
void register_logits(CLI::App& app);
void register_random_checkpoint(CLI::App& app);

}  // namespace lizard::cli
