// Watchdog: turns a blocking call that never returns (a dead or hung peer rank) into a call of
// `on_timeout`, from a helper thread, once the call has been armed for longer than the timeout.
// The MPI communicator arms it around every collective and aborts the job from the callback;
// tests pass a callback that records instead.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace lizard::dist {

class Watchdog {
 public:
  /// Called from the watchdog thread with the armed operation's name and the seconds it has
  /// been running. May not return (MPI_Abort); if it does, it is not called again for the same
  /// arming.
  using OnTimeout = std::function<void(const std::string& op, double elapsed_s)>;

  /// timeout_s <= 0 disables the watchdog (no thread is started, arm() does nothing).
  Watchdog(double timeout_s, OnTimeout on_timeout);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  /// Disarms when destroyed (normal return or exception).
  class Scope {
   public:
    explicit Scope(Watchdog* w) : w_(w) {}
    ~Scope() {
      if (w_) w_->disarm();
    }
    Scope(Scope&& o) noexcept : w_(o.w_) { o.w_ = nullptr; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    Scope& operator=(Scope&&) = delete;

   private:
    Watchdog* w_;
  };

  /// Starts the clock for `op` (one armed operation at a time; throws Error if already armed).
  [[nodiscard]] Scope arm(const std::string& op);
  double timeout_s() const { return timeout_s_; }

 private:
  void disarm();
  void loop();

  double timeout_s_;
  OnTimeout on_timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool armed_ = false;
  bool fired_ = false;  // the callback ran for the current arming
  bool stop_ = false;
  std::string op_;
  std::chrono::steady_clock::time_point start_;
  std::thread thread_;  // last: started after every other member exists
};

}  // namespace lizard::dist
