#!/usr/bin/env bash
# AddressSanitizer + UBSan build of the CPU test suite (g++, -DLIZARD_SANITIZE=ON, no CUDA) in
# its own build directory, then ctest. Any sanitizer report fails the test that triggered it
# (UBSan halts on the first error; LeakSanitizer reports at exit).
# Usage: scripts/sanitize.sh [build-dir] [ctest args...]   (default build-sanitize)
# Env: LIZARD_JOBS (build parallelism), LIZARD_TEST_JOBS (ctest parallelism).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build-sanitize}"
shift || true
mkdir -p "$BUILD"
# -O1 -g1: sanitizers need frames and line tables, not full debug info (half the build time).
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" -DLIZARD_CUDA=OFF -DLIZARD_SANITIZE=ON \
  >"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log"; exit 2; }
cmake --build "$BUILD" -j"${LIZARD_JOBS:-$(nproc)}"

# Leaks inside uninstrumented system libraries (Open MPI's and HDF5's one-time global state)
# are theirs, not ours.
SUPP="$(realpath "$BUILD")/lsan.supp"
printf 'leak:libmpi\nleak:libopen-pal\nleak:libopen-rte\nleak:libhwloc\nleak:libhdf5\n' >"$SUPP"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1:allocator_may_return_null=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$SUPP}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cd "$BUILD"
# GPU tests skip themselves on a machine without one. Tests that run ranks under mpirun
# (dist_mpi_*, TrainMpirun.*) run with leak checking off: Open MPI's dlopen'ed components leak
# at MPI_Finalize, from modules already unloaded (no frames to suppress by name);
# AddressSanitizer and UBSan stay on for them.
MPI_TESTS="^dist_mpi|Mpirun"
ctest --output-on-failure -E "$MPI_TESTS" -j"${LIZARD_TEST_JOBS:-$(nproc)}" "$@" 2>&1 |
  tee ctest.log | grep -vE "^ *Start |Test +#[0-9]+: .* Passed" || true
ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" ctest --output-on-failure -R "$MPI_TESTS" "$@" 2>&1 |
  tee ctest_mpi.log | grep -vE "^ *Start |Test +#[0-9]+: .* Passed" || true
grep -hE "tests passed|tests failed" ctest.log ctest_mpi.log
! grep -qE "[1-9][0-9]* tests failed|No tests were found" ctest.log ctest_mpi.log
