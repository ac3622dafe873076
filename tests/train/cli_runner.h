// Runs the `lizard` binary from tests (fork/exec), for tests of whole processes: exit codes,
// messages, SIGKILL at random moments. The binary is $LIZARD_BIN (ctest sets it) or
// <build>/bin/lizard.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace lizard::test {

/// Path of the lizard binary under test.
inline std::string lizard_binary() {
  const char* env = std::getenv("LIZARD_BIN");
  if (env && *env) return env;
  return std::string(LIZARD_BINARY_DIR) + "/bin/lizard";
}

/// Starts `lizard args...` with stdout and stderr appended to `log`; returns the pid.
inline pid_t spawn_lizard(const std::vector<std::string>& args, const std::string& log) {
  const std::string bin = lizard_binary();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(bin.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);  // exec failed: the test reports it from the exit code
  }
  return pid;
}

/// What a finished process did.
struct ProcessResult {
  int exit_code = -1;  ///< exit status, or -1 when killed by a signal
  int signal = 0;      ///< the signal that ended it, or 0
  std::string output;  ///< stdout and stderr, interleaved
};

/// Waits for `pid` (started with spawn_lizard writing to `log`).
inline ProcessResult wait_lizard(pid_t pid, const std::string& log) {
  int status = 0;
  ProcessResult r;
  pid_t got = -1;
  do {
    got = ::waitpid(pid, &status, 0);
  } while (got < 0 && errno == EINTR);
  const int err = got < 0 ? errno : 0;
  if (got == pid) {
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  }
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  r.output = ss.str();
  if (got != pid) r.output += "\n[waitpid failed: " + std::string(std::strerror(err)) + "]";
  return r;
}

/// Runs `lizard args...` to completion (output captured through `log`, truncated first).
inline ProcessResult run_lizard(const std::vector<std::string>& args, const std::string& log) {
  std::ofstream(log, std::ios::trunc).close();
  return wait_lizard(spawn_lizard(args, log), log);
}

}  // namespace lizard::test
