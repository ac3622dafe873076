// AdamW against steps computed by hand, clipping, the skip of non-finite steps, state
// save/load, and LR schedule values at their boundaries.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "lizard/io/hdf5_file.h"
#include "lizard/optim/adamw.h"
#include "lizard/optim/schedule.h"

namespace lizard::optim {
namespace {

using autograd::Var;

Var param(std::vector<double> v, Shape s, DType dt, const char* name) {
  Var p(Tensor::from_vector(v, s, dt), true);
  p.set_name(name);
  return p;
}

TEST(AdamW, MatchesHandComputedSteps) {
  // One scalar weight w0 = 1, gradient 0.5 then -0.25, lr 0.1, b1 0.9, b2 0.99, eps 1e-8,
  // weight decay 0.1. Step 1: m = 0.05, v = 0.0025, mhat = 0.5, vhat = 0.25,
  //   w = 1 - 0.1 * (0.5/(0.5+1e-8) + 0.1*1) = 1 - 0.1 * (0.99999998 + 0.1) = 0.890000002.
  // Step 2: m = 0.045 - 0.025 = 0.02, v = 0.002475 + 0.000625 = 0.0031,
  //   mhat = 0.02/0.19 = 0.105263157894..., vhat = 0.0031/0.0199 = 0.155778894472...,
  //   w = 0.890000002 - 0.1 * (mhat/(sqrt(vhat)+1e-8) + 0.1*0.890000002).
  Var w = param({1.0}, {1, 1}, DType::F64, "w");
  AdamW opt({{{w}, 0.1}}, {0.9, 0.99, 1e-8});
  w.set_grad(Tensor::from_vector({0.5}, {1, 1}, DType::F64));
  StepResult r = opt.step(0.1, 0.0);
  EXPECT_FALSE(r.skipped);
  EXPECT_DOUBLE_EQ(r.grad_norm, 0.5);
  const double w1 = 1.0 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.1);
  EXPECT_NEAR(w.data().item(), w1, 1e-15);  // f64 state: rounding only
  EXPECT_NEAR(w1, 0.890000002, 1e-12);      // the hand value above
  w.set_grad(Tensor::from_vector({-0.25}, {1, 1}, DType::F64));
  opt.step(0.1, 0.0);
  const double mhat = 0.02 / 0.19, vhat = 0.0031 / (1 - 0.99 * 0.99);
  const double w2 = w1 - 0.1 * (mhat / (std::sqrt(vhat) + 1e-8) + 0.1 * w1);
  EXPECT_NEAR(w.data().item(), w2, 1e-15);
  EXPECT_EQ(opt.steps(), 2);
}

TEST(AdamW, GroupsClippingAndNoGradParams) {
  Var a = param({1, 2, 3, 4}, {2, 2}, DType::F64, "a");  // matrix: decays
  Var b = param({1, 1}, {2}, DType::F64, "b");           // vector: no decay
  Var frozen = param({5}, {1}, DType::F64, "frozen");
  frozen.set_requires_grad(false);
  Var unused = param({7}, {1}, DType::F64, "unused");
  auto groups = make_param_groups({a, b, frozen, unused}, 0.5);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 1u);
  EXPECT_EQ(groups[0].weight_decay, 0.5);
  EXPECT_EQ(groups[1].params.size(), 2u);  // b and unused
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  AdamW opt(groups);
  // Gradient norm sqrt(9+16+0+0+0+0) = 5 (a), b has 0: clip to 1 gives scale 1/(5+1e-6).
  a.set_grad(Tensor::from_vector({3, 4, 0, 0}, {2, 2}, DType::F64));
  b.set_grad(Tensor::from_vector({0, 0}, {2}, DType::F64));
  StepResult r = opt.step(0.01, 1.0);
  EXPECT_DOUBLE_EQ(r.grad_norm, 5.0);
  EXPECT_NEAR(r.clip_scale, 1.0 / (5.0 + 1e-6), 1e-15);
  // First Adam step moves by lr * sign(g) (mhat/sqrt(vhat) = +-1, clipping cancels) plus decay.
  auto va = a.data().to_vector();
  EXPECT_NEAR(va[0], 1 - 0.01 * (1.0 / (1.0 + 1e-8 / (3 / 5.0)) + 0.5 * 1), 1e-12);
  EXPECT_NEAR(va[2], 3 - 0.01 * (0 + 0.5 * 3), 1e-12);  // zero gradient: decay only
  EXPECT_EQ(b.data().to_vector(), (std::vector<double>{1, 1}));  // zero grad, no decay
  EXPECT_EQ(unused.data().item(), 7.0);  // no gradient: untouched
}

TEST(AdamW, NonFiniteStepIsSkippedAndCounted) {
  Var w = param({1, 2}, {2}, DType::F32, "w");
  AdamW opt({{{w}, 0.0}});
  for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
    w.set_grad(Tensor::from_vector({0.1, bad}, {2}, DType::F32));
    StepResult r = opt.step(0.1, 1.0);
    EXPECT_TRUE(r.skipped);
  }
  EXPECT_EQ(opt.skipped_steps(), 2);
  EXPECT_EQ(opt.steps(), 0);
  EXPECT_EQ(w.data().to_vector(), (std::vector<double>{1, 2}));
  w.set_grad(Tensor::from_vector({0.1, 0.1}, {2}, DType::F32));
  EXPECT_FALSE(opt.step(0.1, 1.0).skipped);
  EXPECT_EQ(opt.steps(), 1);  // bias correction counts applied steps only
  EXPECT_NEAR(w.data().to_vector()[0], 1 - 0.1, 1e-6);
}

TEST(AdamW, Bf16ParameterKeepsAnF32Master) {
  // 1 + 1e-3 is not representable in bf16 (spacing 2^-7): the master must keep it.
  Var w(Tensor::full({1}, 1.0, DType::BF16), true);
  AdamW opt({{{w}, 0.0}});
  for (int i = 0; i < 3; ++i) {
    w.set_grad(Tensor::full({1}, -1.0, DType::BF16));
    opt.step(1e-3, 0.0);
  }
  // Three steps of +1e-3 each (mhat/sqrt(vhat) = 1): master 1.003, bf16 rounds to 1.0.
  EXPECT_EQ(w.data().item(), 1.0);
  w.set_grad(Tensor::full({1}, -1.0, DType::BF16));
  for (int i = 0; i < 5; ++i) {
    w.set_grad(Tensor::full({1}, -1.0, DType::BF16));
    opt.step(1e-3, 0.0);
  }
  EXPECT_EQ(w.data().item(), 1.0078125);  // master 1.008 rounds to the next bf16 value
}

TEST(AdamW, SaveLoadContinuesIdentically) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("lizard_adamw_" + std::to_string(getpid()) + ".h5"))
          .string();
  auto make = [] {
    return std::vector<Var>{param({0.5, -0.5, 0.25}, {3, 1}, DType::F32, "layer.w"),
                            param({0.1}, {1}, DType::F32, "layer.b")};
  };
  auto grads = [](int step) {
    return std::vector<Tensor>{Tensor::uniform({3, 1}, -1, 1, 99, step),
                               Tensor::uniform({1}, -1, 1, 98, step)};
  };
  auto run = [&](std::vector<Var>& ps, AdamW& opt, int from, int to) {
    for (int s = from; s < to; ++s) {
      auto g = grads(s);
      for (size_t i = 0; i < ps.size(); ++i) ps[i].set_grad(g[i]);
      opt.step(0.01, 0.5);
    }
  };
  auto straight = make();
  AdamW o1(make_param_groups(straight, 0.1));
  run(straight, o1, 0, 6);

  auto first = make();
  AdamW o2(make_param_groups(first, 0.1));
  run(first, o2, 0, 3);
  {
    io::H5File f = io::H5File::create(path);
    o2.save(f);
    f.write("w", first[0].data());
    f.write("b", first[1].data());
    f.close();
  }
  auto second = make();
  AdamW o3(make_param_groups(second, 0.1));
  {
    io::H5File f = io::H5File::open(path);
    second[0].set_data(f.read("w"));
    second[1].set_data(f.read("b"));
    o3.load(f);
  }
  EXPECT_EQ(o3.steps(), 3);
  run(second, o3, 3, 6);
  for (size_t i = 0; i < 2; ++i)  // bit-identical
    EXPECT_EQ(second[i].data().to_vector(), straight[i].data().to_vector());
  std::filesystem::remove(path);
}

TEST(Schedule, ValuesAtBoundaries) {
  Schedule s{ScheduleKind::Cosine, 1e-3, 100, 0.1, 0.1};
  EXPECT_EQ(s.warmup_steps(), 10);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 1e-4);   // first warm-up step already moves
  EXPECT_DOUBLE_EQ(s.lr_at(4), 5e-4);
  EXPECT_DOUBLE_EQ(s.lr_at(9), 1e-3);   // end of warm-up: the peak
  EXPECT_DOUBLE_EQ(s.lr_at(10), 1e-3);  // decay starts at the peak
  // Midpoint of the decay (p = 0.5): floor + (1 - floor)/2 = 0.55 of the peak.
  Schedule mid{ScheduleKind::Cosine, 1.0, 21, 0.0, 0.1};
  EXPECT_NEAR(mid.lr_at(10), 0.55, 1e-15);
  EXPECT_NEAR(s.lr_at(99), 1e-4, 1e-18);  // the last step sits on the floor
  EXPECT_NEAR(s.lr_at(500), 1e-4, 1e-18);  // past the end: the floor
  for (int64_t i = 10; i < 99; ++i) EXPECT_GE(s.lr_at(i), s.lr_at(i + 1));  // monotone

  Schedule lin{ScheduleKind::Linear, 2.0, 11, 0.0, 0.5};
  EXPECT_DOUBLE_EQ(lin.lr_at(0), 2.0);
  EXPECT_DOUBLE_EQ(lin.lr_at(5), 1.5);  // p = 0.5: 2 * (1 - 0.5 * 0.5)
  EXPECT_DOUBLE_EQ(lin.lr_at(10), 1.0);

  Schedule con{ScheduleKind::Constant, 3.0, 10, 0.2, 0.1};
  EXPECT_DOUBLE_EQ(con.lr_at(0), 1.5);
  EXPECT_DOUBLE_EQ(con.lr_at(1), 3.0);
  EXPECT_DOUBLE_EQ(con.lr_at(9), 3.0);

  Schedule one{ScheduleKind::Cosine, 1.0, 1, 0.1, 0.1};  // a single step: no warm-up rounds up
  EXPECT_EQ(one.warmup_steps(), 0);
  EXPECT_DOUBLE_EQ(one.lr_at(0), 1.0);
  EXPECT_EQ(schedule_kind("linear"), ScheduleKind::Linear);
  EXPECT_THROW(schedule_kind("cos"), InputError);
}

}  // namespace
}  // namespace lizard::optim
