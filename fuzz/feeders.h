// Fuzz feeders: each takes one arbitrary byte string and pushes it through one of lizard's
// parsers exactly as the CLI reads that kind of file. The contract under test: a parser either
// succeeds or throws lizard::Error (usually InputError naming the file); any other exception,
// a crash, a leak or undefined behaviour is a bug. The same feeders serve the libFuzzer
// targets (fuzz/fuzz_main.cpp, clang + sanitizers) and the regression test that replays every
// kept crash input in the normal build (tests/io/fuzz_regression_test.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lizard::fuzz {

/// The bytes as a safetensors file: opens it (header validation) and loads every loadable
/// tensor.
void feed_safetensors(const uint8_t* data, size_t size);
/// The bytes up to the first NUL as a tokenizer.json; when it loads, the bytes after the NUL
/// (or a fixed sample) are encoded and the ids decoded again.
void feed_tokenizer(const uint8_t* data, size_t size);
/// The bytes as a YAML run config (includes resolve from a directory that does not exist);
/// every resolved stage must survive a config_to_yaml round trip.
void feed_yaml_config(const uint8_t* data, size_t size);
/// The bytes as a Hugging Face config.json; a config that loads must survive the
/// hf_config_json round trip.
void feed_hf_config(const uint8_t* data, size_t size);
/// The bytes as an HDF5 token dataset (written to a temporary file, then opened).
void feed_hdf5_dataset(const uint8_t* data, size_t size);

/// One fuzz target: its name (fuzz/corpus/<name>/, tests/fixtures/fuzz_regressions/<name>/)
/// and its feeder.
struct Target {
  const char* name;
  void (*feed)(const uint8_t* data, size_t size);
};

/// Every target, in a fixed order.
const std::vector<Target>& targets();

/// The target called `name`, or nullptr.
const Target* find_target(const std::string& name);

}  // namespace lizard::fuzz
