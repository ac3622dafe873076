// Rank-aware logging.
#include "lizard/dist/logging.h"

#include <cstdlib>
#include <cstring>

namespace lizard::dist {

namespace {

bool all_ranks_requested() {
  const char* v = std::getenv("LIZARD_LOG_ALL_RANKS");
  return v && std::strcmp(v, "1") == 0;
}

std::string prefixed(const Communicator& comm, const std::string& msg) {
  return str_cat("[rank ", comm.rank(), "/", comm.world_size(), "] ", msg, "\n");
}

}  // namespace

bool log_rank0(const Communicator& comm, const std::string& msg, std::ostream& os) {
  if (all_ranks_requested()) {
    os << prefixed(comm, msg) << std::flush;
    return true;
  }
  if (comm.rank() != 0) return false;
  os << (msg + "\n") << std::flush;
  return true;
}

void log_every_rank(const Communicator& comm, const std::string& msg, std::ostream& os) {
  os << prefixed(comm, msg) << std::flush;
}

}  // namespace lizard::dist
