#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "io_test_util.h"
#include "lizard/io/json.h"
#include "lizard/io/safetensors.h"
#include "test_util.h"

using namespace lizard;
using namespace lizard::io;
using lizard::test::error_of;
using lizard::test::TempDir;
using lizard::test::write_file;

namespace {

// A safetensors file assembled by hand (independent of our writer): header JSON + raw bytes.
std::string raw_file(const std::string& header, const std::string& data, uint64_t len_override = 0) {
  uint64_t n = len_override ? len_override : header.size();
  std::string out(8, '\0');
  std::memcpy(&out[0], &n, 8);
  return out + header + data;
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtypeBitExact) {
  TempDir tmp;
  const std::string path = tmp.file("all.safetensors");
  std::vector<std::pair<std::string, Tensor>> ts;
  const DType dts[] = {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::F64, DType::U8};
  int k = 0;
  for (DType dt : dts) {
    // Odd shapes, a scalar and an empty tensor among them.
    Shape s = k == 0 ? Shape{} : (k == 1 ? Shape{3, 0} : Shape{k, 5, 3});
    Tensor t = dtype_is_float(dt) ? test::rand(s, 100 + k, dt, -50, 50)
                                  : test::rand(s, 100 + k, DType::F64, 0, 100).to(dt);
    ts.emplace_back(std::string("t.") + dtype_name(dt), t);
    ++k;
  }
  // A non-contiguous view is written as its logical contents.
  Tensor base = test::rand({4, 6}, 9, DType::F32);
  ts.emplace_back("transposed", base.transpose(0, 1));
  write_safetensors(path, ts, {{"format", "pt"}});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp-" + std::to_string(::getpid())));

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.names().size(), ts.size());
  // Header padded so the data buffer is 8-byte aligned, as HF writes it.
  uint64_t n;
  std::memcpy(&n, read_text_file(path).data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  for (const auto& [name, t] : ts) {
    Tensor got = f.load(name);
    EXPECT_EQ(got.dtype(), t.dtype()) << name;
    EXPECT_EQ(got.shape(), t.shape()) << name;
    EXPECT_EQ(got.to_vector(), t.contiguous().to_vector()) << name;
  }
  // Conversion on load: bf16 file tensor as f32 equals the exact widening.
  Tensor bf = f.load("t.bf16", Device::cpu(), DType::F32);
  EXPECT_EQ(bf.dtype(), DType::F32);
  EXPECT_EQ(bf.to_vector(), ts[1].second.to_vector());
  Tensor f32_as_bf = f.load("t.f32", Device::cpu(), DType::BF16);
  EXPECT_EQ(f32_as_bf.to_vector(), ts[0].second.to(DType::BF16).to_vector());
}

TEST(Safetensors, ReadsAHandWrittenFile) {
  TempDir tmp;
  // Two f32 values and an i64, with unsorted offsets and trailing header spaces.
  float fv[2] = {1.5f, -2.0f};
  int64_t iv = 7;
  std::string data(24, '\0');
  std::memcpy(&data[0], &iv, 8);
  std::memcpy(&data[8], fv, 8);
  const std::string h =
      R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
      R"("a":{"dtype":"I64","shape":[1,1],"data_offsets":[0,8]}}   )";
  write_file(tmp.file("h.safetensors"), raw_file(h, data));
  SafetensorsFile f(tmp.file("h.safetensors"));
  EXPECT_EQ(f.load("b").to_vector(), (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(f.load("a").to_vector(), (std::vector<double>{7}));
  EXPECT_EQ(f.info("a").shape, (Shape{1, 1}));
  EXPECT_NE(error_of<InputError>([&] { f.info("c"); }).find("\"c\""), std::string::npos);
}

TEST(Safetensors, CorruptFilesGiveClearErrors) {
  TempDir tmp;
  const std::string good_h = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::string data(16, '\x01');
  struct Case {
    std::string name, bytes, expect;
  };
  std::vector<Case> cases = {
      {"tiny", "abc", "shorter than the 8-byte header length"},
      {"len_past_eof", raw_file(good_h, data, 1000), "runs past the end of the file"},
      {"truncated_data", raw_file(good_h, data.substr(0, 10)), "truncated"},
      {"bad_json", raw_file(R"({"w":{"dtype":"F32",)", ""), "JSON error"},
      {"not_object", raw_file("[1,2]", ""), "does not start with a JSON object"},
      {"bad_dtype", raw_file(R"({"w":{"dtype":"F12","shape":[2,2],"data_offsets":[0,16]}})", data),
       "unknown dtype \"F12\""},
      {"span_mismatch", raw_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", data),
       "needs 24 bytes but data_offsets span 16"},
      {"overlap", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data),
       "overlap"},
      {"reversed", raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", data),
       "0 <= begin <= end"},
      {"no_offsets", raw_file(R"({"w":{"dtype":"F32","shape":[2]}})", data), "no \"data_offsets\""},
      {"neg_shape", raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
       "negative"},
  };
  for (const Case& c : cases) {
    const std::string p = tmp.file(c.name + ".safetensors");
    write_file(p, c.bytes);
    const std::string msg = error_of<InputError>([&] { SafetensorsFile f(p); });
    EXPECT_NE(msg.find(p), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": " << msg;
  }
  EXPECT_NE(error_of<InputError>([&] { SafetensorsFile f(tmp.file("missing.safetensors")); })
                .find("cannot open"),
            std::string::npos);
  // A valid file with a dtype lizard has no type for: opens, refuses to load by name.
  const std::string p = tmp.file("f8.safetensors");
  write_file(p, raw_file(R"({"q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", "abcd"));
  SafetensorsFile f(p);
  EXPECT_NE(error_of<InputError>([&] { f.load("q"); }).find("F8_E4M3"), std::string::npos);
}

TEST(Safetensors, ShardedCheckpointAndExpectedShapes) {
  TempDir tmp;
  std::vector<std::pair<std::string, Tensor>> ts;
  for (int i = 0; i < 5; ++i)
    ts.emplace_back("layer." + std::to_string(i) + ".w", test::rand({8, 3 + i}, i, DType::F32));
  // ~100 bytes per shard forces several shards.
  auto files = write_safetensors_sharded(tmp.path().string(), ts, 120);
  ASSERT_GT(files.size(), 2u);
  EXPECT_TRUE(std::filesystem::exists(tmp.file("model.safetensors.index.json")));
  Json idx = load_json_file(tmp.file("model.safetensors.index.json"));
  int64_t total = 0;
  for (const auto& nt : ts) total += static_cast<int64_t>(nt.second.nbytes());
  EXPECT_EQ(idx.at("metadata").at("total_size").as_int(), total);

  SafetensorsCheckpoint ck(tmp.path().string());
  EXPECT_EQ(ck.names().size(), 5u);
  for (const auto& [name, t] : ts) EXPECT_EQ(ck.load(name).to_vector(), t.to_vector()) << name;

  std::map<std::string, Shape> expected;
  for (const auto& nt : ts) expected[nt.first] = nt.second.shape();
  ck.check(expected);
  auto all = ck.load_all(expected, Device::cpu(), DType::F64);
  EXPECT_EQ(all.at("layer.4.w").dtype(), DType::F64);

  // One message names every problem.
  expected.erase("layer.0.w");             // now unexpected
  expected["layer.9.w"] = {1};             // missing
  expected["layer.2.w"] = {5, 8};          // wrong shape
  expected["norm.weight"] = {8};           // missing
  const std::string msg = error_of<InputError>([&] { ck.check(expected); });
  EXPECT_NE(msg.find("2 missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layer.9.w"), std::string::npos) << msg;
  EXPECT_NE(msg.find("norm.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1 unexpected"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layer.0.w"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layer.2.w (expected [5, 8], file has [8, 5])"), std::string::npos) << msg;
  EXPECT_NO_THROW(ck.check({{"layer.1.w", {8, 4}}}, /*allow_unexpected=*/true));

  // Single-file checkpoint through the directory form.
  TempDir tmp2;
  write_safetensors(tmp.file("single/model.safetensors"), ts);
  SafetensorsCheckpoint one(tmp.file("single"));
  EXPECT_EQ(one.info("layer.3.w").shape, (Shape{8, 6}));
  EXPECT_NE(error_of<InputError>([&] { SafetensorsCheckpoint c(tmp.file("nothing_here")); })
                .find("nothing_here"),
            std::string::npos);
}

TEST(Safetensors, WriterRejectsBadNames) {
  TempDir tmp;
  Tensor t = Tensor::zeros({2});
  EXPECT_THROW(write_safetensors(tmp.file("a.safetensors"), {{"x", t}, {"x", t}}), InputError);
  EXPECT_THROW(write_safetensors(tmp.file("a.safetensors"), {{"", t}}), InputError);
  EXPECT_FALSE(std::filesystem::exists(tmp.file("a.safetensors")));
}

TEST(Safetensors, LoadsToGpu) {
  LZ_REQUIRE_GPU();
  TempDir tmp;
  Tensor t = test::rand({7, 3}, 5, DType::F32);
  write_safetensors(tmp.file("g.safetensors"), {{"w", t}});
  SafetensorsFile f(tmp.file("g.safetensors"));
  Tensor g = f.load("w", Device::cuda(0), DType::BF16);
  EXPECT_TRUE(g.is_cuda());
  EXPECT_EQ(g.to_vector(), t.to(DType::BF16).to_vector());
}
