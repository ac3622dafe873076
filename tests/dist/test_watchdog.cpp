// Watchdog: fires once for an operation that outlives the timeout, never for one that returns.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "lizard/core/error.h"
#include "lizard/dist/watchdog.h"

namespace lizard::dist {
namespace {

struct Record {
  std::mutex mu;
  std::vector<std::string> ops;
  std::vector<double> elapsed;
  Watchdog::OnTimeout callback() {
    return [this](const std::string& op, double e) {
      std::lock_guard<std::mutex> lk(mu);
      ops.push_back(op);
      elapsed.push_back(e);
    };
  }
  size_t count() {
    std::lock_guard<std::mutex> lk(mu);
    return ops.size();
  }
};

TEST(Watchdog, FiresOnceForAHungOperation) {
  Record rec;
  Watchdog w(0.05, rec.callback());
  {
    auto scope = w.arm("all_reduce_sum of Tensor[7]");
    // Stands for a collective whose peer never arrives: 8x the timeout.
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  ASSERT_EQ(rec.count(), 1u);  // once per arming, not once per poll
  EXPECT_EQ(rec.ops[0], "all_reduce_sum of Tensor[7]");
  EXPECT_GE(rec.elapsed[0], 0.05);
}

TEST(Watchdog, SilentForOperationsThatReturn) {
  Record rec;
  Watchdog w(0.2, rec.callback());
  // Many short arms whose total time exceeds the timeout: the clock restarts with each arm.
  for (int i = 0; i < 20; ++i) {
    auto scope = w.arm("barrier");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // disarmed: nothing to fire
  EXPECT_EQ(rec.count(), 0u);
}

TEST(Watchdog, RearmAfterFiringFiresAgainAndDisabledNeverFires) {
  Record rec;
  {
    Watchdog w(0.03, rec.callback());
    for (int i = 0; i < 2; ++i) {
      auto scope = w.arm(i == 0 ? "first" : "second");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  ASSERT_EQ(rec.count(), 2u);
  EXPECT_EQ(rec.ops[1], "second");
  Record off;
  Watchdog disabled(0.0, off.callback());
  {
    auto scope = disabled.arm("x");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(off.count(), 0u);
}

TEST(Watchdog, DoubleArmIsAnError) {
  Record rec;
  Watchdog w(10.0, rec.callback());
  auto scope = w.arm("a");
  EXPECT_THROW((void)w.arm("b"), Error);
}

}  // namespace
}  // namespace lizard::dist
