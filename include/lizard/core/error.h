// Errors: every failure is an exception carrying where it happened and what was expected.
// Library code never calls exit(); the CLI maps exceptions to exit codes.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace lizard {

/// Base error of the project. `what()` is the full message, context first.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

/// Bad user input (config, file, CLI argument): the CLI exits with code 2.
class InputError : public Error {
 public:
  explicit InputError(const std::string& msg) : Error(msg) {}
};

/// Out of device memory: the CLI prints the allocator statistics.
class OutOfMemoryError : public Error {
 public:
  explicit OutOfMemoryError(const std::string& msg) : Error(msg) {}
};

namespace detail {
inline void build(std::ostringstream&) {}
template <class T, class... Rest>
void build(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  build(os, rest...);
}
}  // namespace detail

/// Concatenates its arguments with operator<< into a string.
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::build(os, args...);
  return os.str();
}

}  // namespace lizard

/// LZ_CHECK(cond, parts...): throws lizard::Error("file:line: parts...") when cond is false.
#define LZ_CHECK(cond, ...)                                                              \
  do {                                                                                   \
    if (!(cond))                                                                         \
      throw ::lizard::Error(::lizard::str_cat(__FILE__, ":", __LINE__, ": ", __VA_ARGS__)); \
  } while (0)

/// LZ_INPUT_CHECK(cond, parts...): like LZ_CHECK but for user input (no source location).
#define LZ_INPUT_CHECK(cond, ...)                                       \
  do {                                                                  \
    if (!(cond)) throw ::lizard::InputError(::lizard::str_cat(__VA_ARGS__)); \
  } while (0)

/// LZ_CUDA_ONLY(call): the call in CUDA builds; elsewhere throws (no link dependency on kernels).
#ifdef LIZARD_WITH_CUDA
#define LZ_CUDA_ONLY(...) __VA_ARGS__
#else
#define LZ_CUDA_ONLY(...) throw ::lizard::Error("this build of lizard has no CUDA support")
#endif
