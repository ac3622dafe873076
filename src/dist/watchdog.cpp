// Watchdog thread: sleeps on a condition variable until a deadline, fires once per arming.
#include "lizard/dist/watchdog.h"

#include "lizard/core/error.h"

namespace lizard::dist {

Watchdog::Watchdog(double timeout_s, OnTimeout on_timeout)
    : timeout_s_(timeout_s), on_timeout_(std::move(on_timeout)) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Watchdog::Scope Watchdog::arm(const std::string& op) {
  if (timeout_s_ <= 0) return Scope(nullptr);
  {
    std::lock_guard<std::mutex> lk(mu_);
    LZ_CHECK(!armed_, "watchdog: arming '", op, "' while '", op_, "' is still armed");
    armed_ = true;
    fired_ = false;
    op_ = op;
    start_ = std::chrono::steady_clock::now();
  }
  cv_.notify_all();
  return Scope(this);
}

void Watchdog::disarm() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    armed_ = false;
  }
  cv_.notify_all();
}

void Watchdog::loop() {
  const auto timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(timeout_s_));
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    if (!armed_ || fired_) {
      cv_.wait(lk);
      continue;
    }
    const auto deadline = start_ + timeout;
    if (std::chrono::steady_clock::now() < deadline) {
      cv_.wait_until(lk, deadline);
      continue;  // re-check: disarmed, re-armed or stopped in the meantime
    }
    fired_ = true;
    const std::string op = op_;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    // The callback may block or abort the process: never hold the lock across it.
    lk.unlock();
    on_timeout_(op, elapsed);
    lk.lock();
  }
}

}  // namespace lizard::dist
