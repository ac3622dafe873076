// Replays fuzz inputs through the same feeders as the libFuzzer targets (fuzz/feeders.h), in
// the normal build: every input that once crashed a parser (kept under
// tests/fixtures/fuzz_regressions/<target>/) and every seed of fuzz/corpus/<target>/ must end
// in success or a lizard::Error, never another exception or a crash. Each target must also
// accept at least one seed, so a feeder that refuses everything cannot pass unnoticed. A kept
// input named "refused-*" must be refused with a lizard::Error (its bug was accepting it, e.g.
// allocating gigabytes for a tiny file), not merely survive.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz/feeders.h"
#include "lizard/core/error.h"

namespace lizard::fuzz {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

enum class Outcome { Accepted, Refused, Bug };

/// Feeds one file; a bug (another exception) is reported as a test failure naming the file.
Outcome feed_file(const Target& t, const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  try {
    t.feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    return Outcome::Accepted;
  } catch (const Error&) {
    return Outcome::Refused;
  } catch (const std::exception& e) {
    ADD_FAILURE() << t.name << ": " << p << " escaped as a non-lizard exception: " << e.what();
    return Outcome::Bug;
  }
}

const fs::path kSource = LIZARD_SOURCE_DIR;

TEST(FuzzRegression, KeptCrashInputsAreCleanErrors) {
  int replayed = 0;
  for (const Target& t : targets()) {
    for (const fs::path& p : files_in(kSource / "tests/fixtures/fuzz_regressions" / t.name)) {
      SCOPED_TRACE(p.string());
      const Outcome o = feed_file(t, p);
      if (p.filename().string().rfind("refused-", 0) == 0)
        EXPECT_EQ(o, Outcome::Refused) << t.name << ": " << p << " must be refused";
      ++replayed;
    }
  }
  RecordProperty("replayed", replayed);
}

TEST(FuzzRegression, SeedCorporaLoadThroughTheFeeders) {
  for (const Target& t : targets()) {
    const auto seeds = files_in(kSource / "fuzz/corpus" / t.name);
    ASSERT_FALSE(seeds.empty()) << "no seed corpus for " << t.name;
    int accepted = 0;
    for (const fs::path& p : seeds) accepted += feed_file(t, p) == Outcome::Accepted;
    EXPECT_GT(accepted, 0) << t.name << ": no seed is accepted";
  }
}

}  // namespace
}  // namespace lizard::fuzz
