#!/usr/bin/env bash
# Builds lizard and runs the whole test suite (ctest). Tests that need a GPU skip themselves
# with a message where none is visible. Usage: scripts/test.sh [build-dir] [cmake args...]
set -euo pipefail
# NVLink SHARP multicast off for any NCCL use (not every lent machine supports it).
export NCCL_NVLS_ENABLE=0
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
shift || true
scripts/setup.sh "$BUILD_DIR" "$@"
cd "$BUILD_DIR"
ctest --output-on-failure -j"${LIZARD_TEST_JOBS:-$(nproc)}" 2>&1 | tee ctest.log | grep -vE "^ *Start |Test +#[0-9]+: .* Passed" || true
# The summary lines and the exit status of ctest itself.
grep -E "tests passed|tests failed" ctest.log
! grep -qE "[1-9][0-9]* tests failed|No tests were found" ctest.log
