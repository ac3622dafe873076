// Shared helpers of the tests that run the trainer or a whole stage on tiny CPU runs
// (tests/train, tests/e2e): fresh scratch directories, a Trainer that prints nothing, the
// loader of a single-process run, and the message of an error a run must stop with.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "lizard/core/error.h"
#include "lizard/train/config.h"
#include "lizard/train/data_loader.h"
#include "lizard/train/trainer.h"

namespace lizard::test {

/// An empty directory <tmp>/<prefix><name>_<pid> (removed first if a previous run left it), so
/// tests of one executable and parallel ctest processes never share files.
inline std::filesystem::path fresh_temp_dir(const std::string& prefix, const std::string& name) {
  namespace fs = std::filesystem;
  fs::path d = fs::temp_directory_path() / (prefix + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

/// Trainer options that keep the test output clean (no per-step lines).
inline train::TrainerOptions quiet_trainer() {
  train::TrainerOptions o;
  o.print = false;
  return o;
}

/// The loader options of `cfg` for a single-process run: its sequence length, micro-batch and
/// seed, shuffled, loss mask honoured, rank 0 of 1.
inline train::LoaderOptions single_rank_loader(const train::RunConfig& cfg) {
  return {cfg.data.seq_len, cfg.data.micro_batch, true, cfg.seed, true, 0, 1};
}

/// The message of the E that f() throws; a test failure saying `missing` (and "") when f
/// returns instead.
template <class E = Error, class F>
std::string thrown_message(F&& f, const char* missing) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << missing;
  return "";
}

}  // namespace lizard::test
