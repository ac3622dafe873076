// Rank-aware logging: under mpirun every rank runs the same code, so by default only rank 0
// prints; a message may ask for every rank (prefixed with the rank), and LIZARD_LOG_ALL_RANKS=1
// turns every log_rank0 into a per-rank line for debugging.
#pragma once
#include <iostream>
#include <string>

#include "lizard/core/error.h"
#include "lizard/dist/communicator.h"

namespace lizard::dist {

/// Writes `msg` + '\n' to `os` when comm.rank() == 0 (on every rank, prefixed "[rank r/N] ",
/// when LIZARD_LOG_ALL_RANKS=1). Returns whether it wrote. The line is written in one call so
/// lines of different ranks do not interleave mid-line.
bool log_rank0(const Communicator& comm, const std::string& msg, std::ostream& os = std::cout);

/// Writes "[rank r/N] " + msg + '\n' to `os` on every rank (for per-rank facts: GPU, host).
void log_every_rank(const Communicator& comm, const std::string& msg,
                    std::ostream& os = std::cout);

/// log_rank0 of the concatenated parts (str_cat), to std::cout.
template <class... Args>
bool log_rank0_cat(const Communicator& comm, const Args&... parts) {
  return log_rank0(comm, str_cat(parts...));
}

}  // namespace lizard::dist
