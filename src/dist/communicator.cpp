// Launch-environment detection, the factory, and the helpers every communicator shares.
#include "lizard/dist/communicator.h"

#include <cstdlib>
#include <cstring>

#include "lizard/core/error.h"

namespace lizard::dist {

namespace {

// An integer environment variable, or `fallback` when unset or not a number.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0') return fallback;
  return static_cast<int>(x);
}

}  // namespace

double CommOptions::default_timeout_s() {
  const char* v = std::getenv("LIZARD_DIST_TIMEOUT_S");
  if (!v || !*v) return 600.0;
  char* end = nullptr;
  double x = std::strtod(v, &end);
  // A typo must not silently disable the watchdog: say which variable and what it needs.
  LZ_INPUT_CHECK(end != v && *end == '\0' && x > 0, "LIZARD_DIST_TIMEOUT_S='", v,
                 "': expected a positive number of seconds");
  return x;
}

LaunchEnv detect_launch_env() {
  LaunchEnv e;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    e.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    e.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", -1);
    e.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", -1);
  } else if (std::getenv("PMI_SIZE")) {
    e.world_size = env_int("PMI_SIZE", 1);
    e.rank = env_int("PMI_RANK", 0);
    e.local_rank = env_int("MPI_LOCALRANKID", -1);
    e.local_size = env_int("MPI_LOCALNRANKS", -1);
  }
  LZ_INPUT_CHECK(e.world_size >= 1 && e.rank >= 0 && e.rank < e.world_size,
                 "launch environment: rank ", e.rank, " of world size ", e.world_size,
                 " is not valid");
  return e;
}

std::vector<std::string> Communicator::all_gather_string(const std::string& mine) {
  std::vector<uint8_t> bytes(mine.begin(), mine.end());
  auto all = all_gather_bytes(bytes);
  std::vector<std::string> out;
  out.reserve(all.size());
  for (auto& b : all) out.emplace_back(b.begin(), b.end());
  return out;
}

void Communicator::check_same_on_all_ranks(const std::string& what, const std::string& value) {
  auto all = all_gather_string(value);
  for (size_t r = 1; r < all.size(); ++r) {
    LZ_INPUT_CHECK(all[r] == all[0], what, " differs between ranks: rank 0 has '", all[0],
                   "', rank ", r, " has '", all[r], "'");
  }
}

bool Communicator::check_all_gather(const Tensor& in, const Tensor& out) const {
  LZ_CHECK(in.defined() && out.defined(), "all_gather: undefined tensor");
  for (const Tensor* t : {&in, &out}) {
    LZ_CHECK(t->is_contiguous(), "all_gather: ", t->desc(), " must be contiguous");
    LZ_CHECK(t->device() == device(), "all_gather: ", t->desc(), " is not on the ", backend(),
             " communicator's device ", device().str());
  }
  LZ_CHECK(in.dtype() == out.dtype(), "all_gather: ", in.desc(), " into ", out.desc(),
           ": dtypes differ");
  LZ_CHECK(out.numel() == in.numel() * world_size(), "all_gather: out ", out.desc(),
           " must hold ", world_size(), " x ", in.numel(), " elements");
  if (in.numel() == 0) return false;
  const char* slot = static_cast<const char*>(out.raw()) + static_cast<size_t>(rank()) * in.nbytes();
  return in.raw() == slot;
}

std::unique_ptr<Communicator> make_communicator(Device device, const CommOptions& opts) {
  const LaunchEnv env = detect_launch_env();
  if (!env.distributed()) return make_single_communicator(device);
  if (device.is_cuda()) {
    LZ_CHECK(have_nccl(), "launched as ", env.world_size,
             " ranks on CUDA, but this build of lizard has no NCCL+MPI support "
             "(reconfigure with NCCL and MPI found, or run one process)");
    return make_nccl_communicator(opts);
  }
  LZ_CHECK(have_mpi(), "launched as ", env.world_size,
           " ranks on the CPU, but this build of lizard has no MPI support");
  return make_mpi_communicator(opts);
}

bool have_mpi() {
#ifdef LIZARD_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool have_nccl() {
#if defined(LIZARD_WITH_NCCL) && defined(LIZARD_WITH_MPI)
  return true;
#else
  return false;
#endif
}

}  // namespace lizard::dist
