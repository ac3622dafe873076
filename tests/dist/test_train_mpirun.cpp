// `mpirun -np N lizard train` end to end on the CPU (MPI communicator): N ranks at the same
// global batch follow the loss trajectory of one process, for pretrain, distill and finetune
// (LoRA), with and without ZeRO-1; a 2-rank checkpoint resumes on 2 ranks bit for bit; resuming
// with another world size, an indivisible global batch, a dead rank and a hung rank all end the
// job non-zero with a clear message, quickly.
//
// Each test launches the real binary ($LIZARD_BIN, set by ctest) under mpirun and reads the
// metrics JSONL that rank 0 writes. Skipped, with a message, where mpirun or MPI support is
// missing. A tiny model (2 layers, width 32, seq 16) keeps every launch around a second.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>

#include "lizard/core/rng.h"
#include "lizard/dist/communicator.h"
#include "lizard/io/hdf5_file.h"
#include "lizard/io/hdf5_tokens.h"

namespace lizard::dist {
namespace {

namespace fs = std::filesystem;

std::string lizard_bin() {
  if (const char* b = std::getenv("LIZARD_BIN")) return b;
  return std::string(LIZARD_BINARY_DIR) + "/bin/lizard";
}

// Skips the test unless `mpirun` runs here and this build has the MPI communicator.
#define REQUIRE_MPIRUN()                                                                   \
  do {                                                                                     \
    if (!have_mpi()) GTEST_SKIP() << "this build has no MPI support: skipped";             \
    if (std::system("command -v mpirun >/dev/null 2>&1") != 0)                             \
      GTEST_SKIP() << "mpirun not found on PATH: skipped (install openmpi-bin)";           \
    if (!fs::exists(lizard_bin())) GTEST_SKIP() << lizard_bin() << " not built: skipped"; \
  } while (0)

struct RunResult {
  int status = -1;  // exit status of mpirun (or of lizard for one process)
  std::string output;
  double seconds = 0;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Runs `lizard train` on `ranks` processes (1 = a plain process, no mpirun: the reference).
RunResult launch(int ranks, const fs::path& cfg, const std::string& args, const fs::path& log,
                 const std::string& env = "") {
  // The config's dist.timeout_s, not a value inherited from the caller's environment.
  std::string cmd = "env -u LIZARD_DIST_TIMEOUT_S -u LIZARD_TEST_FAULT " + env + " ";
  if (ranks > 1) {
    cmd += "mpirun -np " + std::to_string(ranks) + " --oversubscribe";
    if (::geteuid() == 0) cmd += " --allow-run-as-root";
  }
  cmd += " " + lizard_bin() + " train --config " + cfg.string() + " " + args + " > " +
         log.string() + " 2>&1";
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = std::system(cmd.c_str());
  RunResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
  r.output = slurp(log);
  return r;
}

/// What rank 0 logged for one step, as JSON text (9 significant digits).
struct StepLog {
  std::string loss, grad_norm;
  bool operator==(const StepLog& o) const { return loss == o.loss && grad_norm == o.grad_norm; }
};
using Trajectory = std::map<int, StepLog>;

/// step -> what was logged; the last line of a step wins (a resumed run appends).
Trajectory losses(const fs::path& metrics) {
  Trajectory out;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    if (line.find("\"kind\": \"train\"") == std::string::npos) continue;
    auto field = [&](const std::string& k) {
      const size_t p = line.find("\"" + k + "\": ");
      if (p == std::string::npos) return std::string();
      const size_t s = p + k.size() + 4;
      return line.substr(s, line.find_first_of(",}", s) - s);
    };
    out[std::stoi(field("step"))] = {field("loss"), field("grad_norm")};
  }
  return out;
}

// The pre-clip gradient norm is a sum of squares of every gradient element, each carrying the
// f32 rounding of a differently ordered sum: measured up to ~1e-6 relative after 6 steps, so
// 1e-4; a normalisation error (a rank's weight, a factor of the world size) is >= 1e-2.
constexpr double kNormTol = 1e-4;

class TrainMpirun : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lizard_mpirun_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
            "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_data();
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Random documents of 6..40 tokens; the first third of each is "prompt" (mask 0), so ranks
  // hold different numbers of targets and the global-count normalisation is exercised.
  void write_data() {
    io::TokenDatasetWriter w((dir_ / "data.h5").string(), {"test", 64});
    for (int d = 0; d < 48; ++d) {
      const int len = 6 + static_cast<int>(rng_u32(7, d, 0) % 35);
      std::vector<int32_t> doc;
      std::vector<uint8_t> mask;
      for (int t = 0; t < len; ++t) {
        doc.push_back(static_cast<int32_t>(rng_u32(7, d, t + 1) % 64));
        mask.push_back(t >= len / 3 ? 1 : 0);
      }
      w.add(doc, &mask);
    }
    w.finish();
  }

  // global_batch 6 = 6 x 1 rank = 3 x 2 ranks = 2 x 3 ranks of micro-batch 1.
  fs::path config(const std::string& stage) {
    std::ostringstream y;
    y << "stage: " << stage << "\n"
      << "device: cpu\ndtype: f32\nseed: 3\n"
      << "model: {vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,\n"
      << "        num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8}\n"
      << "data: {path: " << (dir_ / "data.h5").string()
      << ", seq_len: 16, micro_batch: 1, global_batch: 6}\n"
      << "optimizer: {lr: 1.0e-2, clip: 1.0}\n"
      << "schedule: {steps: 6, warmup: 0.2}\n"
      << "lizard: {feature_dim: 8, window: 4, sinks: 2, chunk: 16}\n"
      << "lora: {r: 4, alpha: 8}\n"
      << "dist: {timeout_s: 60}\n";
    const fs::path p = dir_ / (stage + ".yaml");
    std::ofstream(p) << y.str();
    return p;
  }

  /// Trains `stage` on `ranks` ranks into out_dir `name`; returns step -> loss text.
  Trajectory train(int ranks, const fs::path& cfg, const std::string& name,
                                   const std::string& sets = "") {
    const RunResult r = launch(ranks, cfg, "--set out_dir=" + (dir_ / name).string() + " " + sets,
                               dir_ / (name + ".log"));
    EXPECT_EQ(r.status, 0) << name << " failed:\n" << r.output;
    return losses(dir_ / name / "metrics.jsonl");
  }

  /// Every step's loss within `rel` and gradient norm within kNormTol of the reference (same
  /// steps). The gradient norm is checked because AdamW hides a constant scale error of the
  /// gradient (its update is scale-invariant) while the pre-clip norm shows it.
  static void expect_close(const Trajectory& got, const Trajectory& ref, double rel,
                           const std::string& what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    ASSERT_FALSE(ref.empty()) << what;
    for (const auto& [step, r] : ref) {
      ASSERT_TRUE(got.count(step)) << what << " step " << step;
      const StepLog& g = got.at(step);
      for (auto [a, b, tol, name] :
           {std::tuple{std::stod(g.loss), std::stod(r.loss), rel, "loss"},
            std::tuple{std::stod(g.grad_norm), std::stod(r.grad_norm), kNormTol, "grad_norm"}})
        EXPECT_LE(std::abs(a - b), tol * std::abs(b))
            << what << " step " << step << " " << name << ": " << a << " vs one rank " << b;
    }
  }

  fs::path dir_;
};

// Tolerance: one rank accumulates the 6 micro-batch gradients in one order, N ranks sum N
// partial sums (MPI, f32): the gradients differ by f32 rounding (~1e-7 relative), which AdamW
// carries into the weights. Over 6 steps the loss moves by far less than 1e-6 relative; a
// wrong shard, count or normalisation moves it by 1e-3 or more.
constexpr double kSameTrajectory = 1e-6;

TEST_F(TrainMpirun, PretrainOnTwoAndThreeRanksFollowsOneRank) {
  REQUIRE_MPIRUN();
  const fs::path cfg = config("pretrain");
  const auto one = train(1, cfg, "r1");
  ASSERT_EQ(one.size(), 6u);
  expect_close(train(2, cfg, "r2"), one, kSameTrajectory, "pretrain 2 ranks");
  expect_close(train(3, cfg, "r3"), one, kSameTrajectory, "pretrain 3 ranks");
  // The loss moved: the comparison is not between two untrained models.
  EXPECT_GT(std::abs(std::stod(one.at(6).loss) - std::stod(one.at(1).loss)), 1e-2);
}

// dist.sparse_embedding_grad (default off): the untied input embedding's gradient is summed as
// the rows of each step's tokens. On 2 ranks that is the dense all-reduce to the bit (f32:
// (0 + a) + b = a + b, and a row one rank never saw adds nothing), so on and off log the same
// digits; on 3 ranks the sum runs in another order than MPI's (PretrainOnTwoAndThreeRanks
// checks it against one process). A tied table is also the LM head, whose gradient is dense:
// it stays in the buckets and still follows one process.
TEST_F(TrainMpirun, SparseEmbeddingGradOnEqualsOffAndOneRank) {
  REQUIRE_MPIRUN();
  const fs::path cfg = config("pretrain");
  const std::string sparse = "--set dist.sparse_embedding_grad=true";
  const auto on = train(2, cfg, "on", sparse);
  const auto off = train(2, cfg, "off");
  const std::string said = "gradient of model.embed_tokens.weight is summed over ranks as the rows";
  EXPECT_NE(slurp(dir_ / "on.log").find(said), std::string::npos) << slurp(dir_ / "on.log");
  EXPECT_EQ(slurp(dir_ / "off.log").find(said), std::string::npos);
  ASSERT_EQ(on.size(), 6u);
  EXPECT_EQ(on, off);
  expect_close(on, train(1, cfg, "r1"), kSameTrajectory, "sparse embedding gradient, 2 ranks");
  const std::string tied = "--set model.tie_word_embeddings=true";
  expect_close(train(2, cfg, "tied2", tied + " " + sparse), train(1, cfg, "tied1", tied), kSameTrajectory,
               "tied embeddings, 2 ranks");
  EXPECT_EQ(slurp(dir_ / "tied2.log").find(said), std::string::npos) << "a tied table is dense";
}

TEST_F(TrainMpirun, Zero1EqualsPlainDataParallelAndOneRank) {
  REQUIRE_MPIRUN();
  const fs::path cfg = config("pretrain");
  const auto one = train(1, cfg, "r1");
  const auto plain = train(2, cfg, "r2");
  const auto z2 = train(2, cfg, "z2", "--set dist.zero1=true");
  // Same gradients, same global clip norm, same per-tensor update: bit for bit.
  EXPECT_EQ(z2, plain);
  expect_close(z2, one, kSameTrajectory, "zero1 2 ranks");
  expect_close(train(3, cfg, "z3", "--set dist.zero1=true"), one, kSameTrajectory,
               "zero1 3 ranks");
  // Every rank saved its own optimizer shard, rank 0 the whole model.
  const fs::path ck = dir_ / "z2" / "checkpoints" / "step-00000006";
  for (const char* f : {"model.h5", "state-rank0.h5", "state-rank1.h5", "DONE"})
    EXPECT_TRUE(fs::exists(ck / f)) << f;
}

TEST_F(TrainMpirun, FinetuneLoraOnTwoAndThreeRanksFollowsOneRank) {
  REQUIRE_MPIRUN();
  const fs::path cfg = config("finetune");
  const std::string lr = "--set optimizer.lr=2e-2 ";
  const auto one = train(1, cfg, "r1", lr);
  ASSERT_EQ(one.size(), 6u);
  expect_close(train(2, cfg, "r2", lr), one, kSameTrajectory, "finetune 2 ranks");
  expect_close(train(3, cfg, "r3", lr), one, kSameTrajectory, "finetune 3 ranks");
  // Overlap off (reduce after backward) is the same computation.
  expect_close(train(2, cfg, "r2n", lr + "--set dist.overlap=false"), one, kSameTrajectory,
               "finetune 2 ranks, no overlap");
  EXPECT_GT(std::abs(std::stod(one.at(6).loss) - std::stod(one.at(1).loss)), 1e-3);
}

TEST_F(TrainMpirun, DistillOnTwoRanksFollowsOneRank) {
  REQUIRE_MPIRUN();
  const fs::path cfg = config("distill");
  const auto one = train(1, cfg, "r1");
  expect_close(train(2, cfg, "r2"), one, kSameTrajectory, "distill 2 ranks");
}

TEST_F(TrainMpirun, TwoRankCheckpointResumesBitIdentically) {
  REQUIRE_MPIRUN();
  const fs::path cfg = config("pretrain");
  const std::string ck = "--set checkpoint.every=3 --set checkpoint.keep_last=0 ";
  const auto straight = train(2, cfg, "straight", ck);
  ASSERT_EQ(straight.size(), 6u);
  // The same run stopped after the step-3 checkpoint: remove what came after, resume.
  const fs::path run = dir_ / "resumed";
  train(2, cfg, "resumed", ck);
  fs::remove_all(run / "checkpoints" / "step-00000006");
  fs::remove(run / "metrics.jsonl");
  const auto resumed = train(2, cfg, "resumed", ck + "--resume");
  ASSERT_EQ(resumed.size(), 3u);
  for (int s = 4; s <= 6; ++s) {
    EXPECT_EQ(resumed.at(s).loss, straight.at(s).loss) << "step " << s;
    EXPECT_EQ(resumed.at(s).grad_norm, straight.at(s).grad_norm) << "step " << s;
  }
  // And the final weights, exactly.
  io::H5File a = io::H5File::open((dir_ / "straight/checkpoints/step-00000006/model.h5").string());
  io::H5File b = io::H5File::open((run / "checkpoints/step-00000006/model.h5").string());
  ASSERT_EQ(a.datasets(), b.datasets());
  for (const std::string& n : a.datasets()) {
    const auto va = a.read(n).to_vector(), vb = b.read(n).to_vector();
    EXPECT_EQ(va, vb) << n;
  }
}

TEST_F(TrainMpirun, ResumeWithAnotherWorldSizeNamesBothSizes) {
  REQUIRE_MPIRUN();
  const fs::path cfg = config("pretrain");
  train(2, cfg, "run", "--set schedule.steps=3");
  const std::string out = "--set out_dir=" + (dir_ / "run").string() + " --resume";
  const RunResult three = launch(3, cfg, out, dir_ / "three.log");
  EXPECT_NE(three.status, 0);
  EXPECT_NE(three.output.find("was written by 2 ranks, this run has 3"), std::string::npos)
      << three.output;
  const RunResult one = launch(1, cfg, out, dir_ / "one.log");
  EXPECT_EQ(one.status, 2) << one.output;  // an input error, from a plain process
  EXPECT_NE(one.output.find("was written by 2 ranks, this run has 1"), std::string::npos)
      << one.output;
}

TEST_F(TrainMpirun, IndivisibleGlobalBatchIsAConfigError) {
  REQUIRE_MPIRUN();
  const RunResult r = launch(4, config("pretrain"), "--set out_dir=" + (dir_ / "x").string(),
                             dir_ / "x.log");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("data.global_batch (6) must be a multiple of data.micro_batch x ranks (1 x 4)"),
            std::string::npos)
      << r.output;
}

TEST_F(TrainMpirun, DeadRankEndsTheJob) {
  REQUIRE_MPIRUN();
  // Rank 1 exits (as a crash would) in its 7th all-reduce, inside step 3.
  const RunResult r = launch(2, config("pretrain"), "--set out_dir=" + (dir_ / "x").string(),
                             dir_ / "x.log", "LIZARD_TEST_FAULT=1:7:die");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank 1: LIZARD_TEST_FAULT: dying"), std::string::npos) << r.output;
  EXPECT_LT(r.seconds, 30) << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "x" / "checkpoints" / "step-00000006")) << "a complete run?";
}

TEST_F(TrainMpirun, HungRankEndsTheJobWithinTheTimeout) {
  REQUIRE_MPIRUN();
  // Rank 1 hangs in step 3; rank 0 waits in the same all-reduce until dist.timeout_s (3 s).
  const RunResult r = launch(2, config("pretrain"),
                             "--set dist.timeout_s=3 --set out_dir=" + (dir_ / "x").string(),
                             dir_ / "x.log",
                             "LIZARD_TEST_FAULT=1:7:hang");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank 1: LIZARD_TEST_FAULT: hanging"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 0: MPI all_reduce_sum"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("did not complete within"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("a rank died or hung"), std::string::npos) << r.output;
  EXPECT_LT(r.seconds, 30) << r.output;
}

}  // namespace
}  // namespace lizard::dist
