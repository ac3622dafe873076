// Checkpoints (DESIGN.md section 5): a directory per step under the run's checkpoint root,
//   step-00000100/model.h5          named model tensors (rank 0)
//   step-00000100/state-rank{r}.h5  optimizer, RNG, data position, step, world size
//   step-00000100/config.yaml       the resolved config
//   step-00000100/DONE              written last
// built in a ".tmp" sibling and renamed into place, so a crash never leaves a checkpoint
// that looks complete. Only the newest keep_last complete checkpoints are kept.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lizard/core/rng.h"
#include "lizard/core/tensor.h"

namespace lizard::optim {
class AdamW;
}

namespace lizard::train {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// What one rank saves besides the model.
struct TrainState {
  int64_t step = 0;           ///< optimizer steps completed
  int64_t data_position = 0;  ///< DataLoader::position()
  uint64_t rng_seed = 0;      ///< Generator state
  uint64_t rng_offset = 0;
  int64_t tokens_seen = 0;
};

/// "<root>/step-00000042".
std::string checkpoint_path(const std::string& root, int64_t step);

/// Writes the checkpoint of `step`. Every rank calls it; rank 0 writes model.h5, the config
/// and DONE after `barrier` (every rank's state file is then on disk), renames the directory
/// into place and prunes to `keep_last` (0 = keep all). Returns the final directory.
std::string save_checkpoint(const std::string& root, int64_t step, const NamedTensors& model,
                            const optim::AdamW& opt, const TrainState& state,
                            const std::string& config_yaml, int rank, int world, int64_t keep_last,
                            const std::function<void()>& barrier = {});

/// The newest complete checkpoint (with DONE) under root, if any.
std::optional<std::string> find_last_checkpoint(const std::string& root);

/// Restores this rank's optimizer and returns its TrainState. InputError when the directory
/// is incomplete (no DONE), the rank's file is missing, or the checkpoint was written by
/// another number of ranks (the data order and optimizer shards would not line up).
TrainState load_checkpoint_state(const std::string& dir, optim::AdamW& opt, int rank, int world);

/// Reads the model tensors of a checkpoint (all, by name).
NamedTensors load_checkpoint_model(const std::string& dir);

}  // namespace lizard::train
