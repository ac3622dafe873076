// One libFuzzer entry point per target: built once per target with LIZARD_FUZZ_TARGET set to
// its name (fuzz/CMakeLists.txt). A lizard::Error is the parser refusing bad input, which is
// correct; anything else escapes and aborts, and libFuzzer keeps the input as a crash.
#include <cstdio>
#include <cstdlib>

#include "feeders.h"
#include "lizard/core/error.h"

#ifndef LIZARD_FUZZ_TARGET
#error "LIZARD_FUZZ_TARGET must name the target (see fuzz/CMakeLists.txt)"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const lizard::fuzz::Target* target = [] {
    const lizard::fuzz::Target* t = lizard::fuzz::find_target(LIZARD_FUZZ_TARGET);
    if (!t) {
      std::fprintf(stderr, "fuzz: unknown target %s\n", LIZARD_FUZZ_TARGET);
      std::abort();
    }
    return t;
  }();
  try {
    target->feed(data, size);
  } catch (const lizard::Error&) {
    // refused with a message: the contract
  }
  return 0;
}
