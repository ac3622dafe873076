// Checkpoint directories (see include/lizard/train/checkpoint.h).
#include "lizard/train/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "lizard/core/error.h"
#include "lizard/io/hdf5_file.h"
#include "lizard/optim/adamw.h"

namespace lizard::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kPrefix = "step-";

/// The step of a directory named "step-NNNNNNNN", or -1.
int64_t step_of(const fs::path& p) {
  const std::string n = p.filename().string();
  if (n.rfind(kPrefix, 0) != 0 || n.size() <= 5) return -1;
  const std::string digits = n.substr(5);
  if (!std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, fs::path>> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    const int64_t s = step_of(e.path());
    if (s >= 0 && e.is_directory() && fs::exists(e.path() / "DONE")) out.emplace_back(s, e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// Deletes a checkpoint directory so that a kill half-way never leaves it looking complete:
/// the DONE marker goes first (one atomic unlink), then the rest.
void remove_checkpoint(const fs::path& dir) {
  std::error_code ec;
  fs::remove(dir / "DONE", ec);
  fs::remove_all(dir);
}

Tensor scalar_i64(int64_t v) { return Tensor::from_data<int64_t>({v}, {}); }

int64_t read_i64(const io::H5File& f, const std::string& name) {
  LZ_INPUT_CHECK(f.has(name), "checkpoint ", f.path(), ": '", name, "' is missing");
  const Tensor t = f.read(name);
  LZ_INPUT_CHECK(t.dtype() == DType::I64 && t.numel() == 1, "checkpoint ", f.path(), ": '", name,
                 "' is not an int64 scalar");
  return t.data<int64_t>()[0];
}

}  // namespace

std::string checkpoint_path(const std::string& root, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "%s%08lld", kPrefix, static_cast<long long>(step));
  return (fs::path(root) / name).string();
}

std::string save_checkpoint(const std::string& root, int64_t step, const NamedTensors& model,
                            const optim::AdamW& opt, const TrainState& state,
                            const std::string& config_yaml, int rank, int world, int64_t keep_last,
                            const std::function<void()>& barrier) {
  const std::string final_dir = checkpoint_path(root, step);
  const std::string tmp = final_dir + ".tmp";
  if (rank == 0) {
    fs::remove_all(tmp);  // a leftover of a crashed save
    fs::create_directories(tmp);
  }
  if (barrier) barrier();
  {
    io::H5File f = io::H5File::create((fs::path(tmp) / str_cat("state-rank", rank, ".h5")).string());
    opt.save(f, "optim");
    f.write("step", scalar_i64(state.step));
    f.write("data_position", scalar_i64(state.data_position));
    f.write("rng_seed", scalar_i64(static_cast<int64_t>(state.rng_seed)));
    f.write("rng_offset", scalar_i64(static_cast<int64_t>(state.rng_offset)));
    f.write("tokens_seen", scalar_i64(state.tokens_seen));
    f.set_attr("world_size", static_cast<int64_t>(world));
    f.set_attr("rank", static_cast<int64_t>(rank));
    f.close();
  }
  if (rank == 0) {
    io::H5File f = io::H5File::create((fs::path(tmp) / "model.h5").string());
    for (const auto& [name, t] : model) f.write(name, t);
    f.set_attr("step", step);
    f.close();
    std::ofstream(fs::path(tmp) / "config.yaml") << config_yaml;
  }
  if (barrier) barrier();
  if (rank == 0) {
    {
      std::ofstream done(fs::path(tmp) / "DONE");
      done << "step " << step << " world " << world << "\n";
      LZ_CHECK(done.good(), "checkpoint ", tmp, ": cannot write DONE (disk full?)");
    }
    remove_checkpoint(final_dir);  // re-saving a step (e.g. after a resume) replaces it
    fs::rename(tmp, final_dir);
    if (keep_last > 0) {
      auto all = complete_checkpoints(root);
      for (size_t i = 0; i + keep_last < all.size(); ++i) remove_checkpoint(all[i].second);
    }
  }
  if (barrier) barrier();
  return final_dir;
}

std::optional<std::string> find_last_checkpoint(const std::string& root) {
  auto all = complete_checkpoints(root);
  if (all.empty()) return std::nullopt;
  return all.back().second.string();
}

TrainState load_checkpoint_state(const std::string& dir, optim::AdamW& opt, int rank, int world) {
  LZ_INPUT_CHECK(fs::exists(fs::path(dir) / "DONE"), "checkpoint ", dir,
                 ": incomplete (no DONE marker); was the save interrupted?");
  // DONE records the world size ("step N world W"): every rank, even one with no state file
  // of its own, names both sizes.
  {
    std::ifstream done(fs::path(dir) / "DONE");
    std::string w1, w2;
    int64_t saved_step = 0, saved_world = 0;
    if (done >> w1 >> saved_step >> w2 >> saved_world && w2 == "world") {
      LZ_INPUT_CHECK(saved_world == world, "checkpoint ", dir, " was written by ", saved_world,
                     " ranks, this run has ", world,
                     "; resume with the same number of ranks (mpirun -np ", saved_world, ")");
    }
  }
  const std::string path = (fs::path(dir) / str_cat("state-rank", rank, ".h5")).string();
  LZ_INPUT_CHECK(fs::exists(path), "checkpoint ", dir, ": no state file for rank ", rank,
                 " (it was written by fewer ranks than this run's ", world, ")");
  io::H5File f = io::H5File::open(path);
  const int64_t saved_world = f.attr_int("world_size");
  LZ_INPUT_CHECK(saved_world == world, "checkpoint ", dir, " was written by ", saved_world,
                 " ranks, this run has ", world,
                 "; resume with the same number of ranks (mpirun -np ", saved_world, ")");
  opt.load(f, "optim");
  TrainState s;
  s.step = read_i64(f, "step");
  s.data_position = read_i64(f, "data_position");
  s.rng_seed = static_cast<uint64_t>(read_i64(f, "rng_seed"));
  s.rng_offset = static_cast<uint64_t>(read_i64(f, "rng_offset"));
  s.tokens_seen = read_i64(f, "tokens_seen");
  return s;
}

NamedTensors load_checkpoint_model(const std::string& dir) {
  io::H5File f = io::H5File::open((fs::path(dir) / "model.h5").string());
  NamedTensors out;
  for (const std::string& name : f.datasets()) out.emplace_back(name, f.read(name));
  return out;
}

}  // namespace lizard::train
