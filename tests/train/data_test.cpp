// HDF5 files, token datasets and the packing data loader, against naive re-computations.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "lizard/core/error.h"
#include "lizard/io/hdf5_file.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/train/data_loader.h"
#include "train_fixture.h"

namespace lizard {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  return test::fresh_temp_dir("lizard_data_", name);
}

template <class F>
std::string input_error(F&& f) {
  return test::thrown_message<InputError>(f, "no InputError thrown");
}

TEST(Hdf5File, RoundTripsEveryDtypeAndAttributes) {
  const fs::path d = temp_dir("h5");
  const std::string p = (d / "a.h5").string();
  Tensor f32 = Tensor::uniform({3, 5}, -1, 1, 1, 0);
  Tensor f64 = Tensor::uniform({7}, -1, 1, 2, 0, DType::F64);
  Tensor bf = Tensor::uniform({2, 3}, -1, 1, 3, 0).to(DType::BF16);
  Tensor i32 = Tensor::from_data<int32_t>({1, -2, 3}, {3});
  Tensor i64 = Tensor::from_data<int64_t>({int64_t(1) << 40, -5}, {2});
  Tensor u8 = Tensor::from_data<uint8_t>({0, 255, 7}, {3});
  Tensor scalar = Tensor::full({}, 2.5);
  Tensor empty = Tensor::empty({0}, DType::I32);
  {
    io::H5File f = io::H5File::create(p);
    f.write("f32", f32);
    f.write("group/f64", f64);
    f.write("group/deep/bf16", bf);
    f.write("i32", i32);
    f.write("i64", i64);
    f.write("u8", u8);
    f.write("scalar", scalar);
    f.write("empty", empty);
    f.set_attr("name", std::string("hello"));
    f.set_attr("count", int64_t(-42));
    f.close();
  }
  io::H5File f = io::H5File::open(p);
  auto same = [](const Tensor& a, const Tensor& b) {
    EXPECT_EQ(a.dtype(), b.dtype());
    EXPECT_EQ(a.shape(), b.shape());
    EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes()));  // bit-exact
  };
  same(f.read("f32"), f32);
  same(f.read("group/f64"), f64);
  same(f.read("group/deep/bf16"), bf);
  same(f.read("i32"), i32);
  same(f.read("i64"), i64);
  same(f.read("u8"), u8);
  same(f.read("scalar"), scalar);
  same(f.read("empty"), empty);
  same(f.read_range("group/f64", 2, 3), f64.slice(0, 2, 5).contiguous());
  EXPECT_EQ(f.attr_string("name"), "hello");
  EXPECT_EQ(f.attr_int("count"), -42);
  EXPECT_TRUE(f.has("group/deep/bf16"));
  EXPECT_FALSE(f.has("group/deep"));  // a group, not a dataset
  EXPECT_FALSE(f.has("nope/x"));
  EXPECT_EQ(f.datasets(), (std::vector<std::string>{"empty", "f32", "group/deep/bf16",
                                                    "group/f64", "i32", "i64", "scalar", "u8"}));
  EXPECT_NE(input_error([&] { f.read("missing"); }).find("'missing'"), std::string::npos);
  fs::remove_all(d);
}

TEST(Hdf5File, MissingAndCorruptFilesAreClearErrors) {
  const fs::path d = temp_dir("bad");
  std::string m = input_error([&] { io::H5File::open((d / "none.h5").string()); });
  EXPECT_NE(m.find("none.h5"), std::string::npos) << m;
  EXPECT_NE(m.find("not found"), std::string::npos) << m;
  std::ofstream(d / "junk.h5") << "this is not hdf5 at all";
  m = input_error([&] { io::H5File::open((d / "junk.h5").string()); });
  EXPECT_NE(m.find("junk.h5"), std::string::npos) << m;
  // A truncated real file.
  {
    io::TokenDatasetWriter w((d / "ok.h5").string(), {"h", 10});
    std::vector<int32_t> doc(5000, 3);
    w.add(doc);
    w.finish();
  }
  const auto size = fs::file_size(d / "ok.h5");
  fs::copy_file(d / "ok.h5", d / "cut.h5");
  fs::resize_file(d / "cut.h5", size / 2);
  m = input_error([&] { io::TokenDataset::open((d / "cut.h5").string()); });
  EXPECT_NE(m.find("cut.h5"), std::string::npos) << m;
  fs::remove_all(d);
}

TEST(TokenDataset, WriterReaderRoundTripAndValidation) {
  const fs::path d = temp_dir("tok");
  const std::string p = (d / "t.h5").string();
  io::TokenDatasetWriter w(p, {"abc123", 50});
  w.add({1, 2, 3});
  std::vector<uint8_t> mask{0, 0, 1, 1};
  w.add({4, 5, 6, 7}, &mask);
  w.add({49});
  EXPECT_THROW(w.add({50}), InputError);  // outside the vocabulary
  w.finish();
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  io::TokenDataset ds = io::TokenDataset::open(p);
  EXPECT_EQ(ds.num_docs(), 3);
  EXPECT_EQ(ds.num_tokens(), 8);
  EXPECT_EQ(ds.meta().tokenizer_hash, "abc123");
  EXPECT_EQ(ds.meta().vocab_size, 50);
  EXPECT_EQ(ds.doc_begin(1), 3);
  EXPECT_EQ(ds.doc_len(1), 4);
  EXPECT_EQ(ds.doc_len(2), 1);
  ASSERT_TRUE(ds.has_mask());
  // The first document had no mask: all targets.
  const std::vector<bool> want{1, 1, 1, 0, 0, 1, 1, 1};
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(ds.is_target(i), want[i]) << i;

  // Schema violations.
  {
    io::H5File f = io::H5File::create((d / "v2.h5").string());
    f.write("tokens", Tensor::from_data<int32_t>({1}, {1}));
    f.write("offsets", Tensor::from_data<int64_t>({0}, {1}));
    f.set_attr("schema_version", int64_t(2));
    f.close();
  }
  EXPECT_NE(input_error([&] { io::TokenDataset::open((d / "v2.h5").string()); }).find("schema version 2"),
            std::string::npos);
  {
    io::H5File f = io::H5File::create((d / "badoff.h5").string());
    f.write("tokens", Tensor::from_data<int32_t>({1, 2, 3}, {3}));
    f.write("offsets", Tensor::from_data<int64_t>({0, 2, 1}, {3}));
    f.set_attr("schema_version", int64_t(1));
    f.set_attr("vocab_size", int64_t(10));
    f.set_attr("tokenizer_hash", std::string("x"));
    f.close();
  }
  EXPECT_NE(input_error([&] { io::TokenDataset::open((d / "badoff.h5").string()); }).find("document 1"),
            std::string::npos);
  fs::remove_all(d);
}

/// A dataset of `n` documents of varied lengths, token values encode (doc, position).
std::shared_ptr<io::TokenDataset> make_dataset(const fs::path& dir, int n, bool with_mask) {
  const std::string p = (dir / "docs.h5").string();
  io::TokenDatasetWriter w(p, {"test", 100000});
  for (int i = 0; i < n; ++i) {
    const int len = 1 + (i * 7) % 13;  // 1..13, includes single-token documents
    std::vector<int32_t> doc;
    std::vector<uint8_t> mask;
    for (int j = 0; j < len; ++j) {
      doc.push_back(i * 100 + j + 1);  // never 0, the padding token
      mask.push_back(j >= len / 2);  // "response" = second half
    }
    w.add(doc, with_mask ? &mask : nullptr);
  }
  w.finish();
  return std::make_shared<io::TokenDataset>(io::TokenDataset::open(p));
}

/// The naive reference: concatenate `order`, cut windows of T+1 with stride T.
void naive_sequence(const io::TokenDataset& ds, const std::vector<int64_t>& order, int64_t T,
                    int64_t i, bool use_mask, std::vector<int32_t>& in, std::vector<int32_t>& tg) {
  std::vector<int32_t> tok;
  std::vector<int> valid;  // may this token be a target?
  for (int64_t d : order)
    for (int64_t p = ds.doc_begin(d); p < ds.doc_end(d); ++p) {
      tok.push_back(ds.token(p));
      valid.push_back(p != ds.doc_begin(d) && (!use_mask || ds.is_target(p)));
    }
  in.assign(T, 0);
  tg.assign(T, train::kIgnoreIndex);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t s = i * T + t;
    if (s < static_cast<int64_t>(tok.size())) in[t] = tok[s];
    if (s + 1 < static_cast<int64_t>(tok.size()) && valid[s + 1]) tg[t] = tok[s + 1];
  }
}

// input_tokens: what the model reads where it differs from the targets (an MQAR answer that
// is only a label). Earlier documents without inputs read their tokens; the loader feeds the
// inputs and takes the targets from the tokens, packed or whole-document.
TEST(TokenDataset, InputTokensRoundTripAndFeedTheLoader) {
  const fs::path d = temp_dir("inputs");
  const std::string p = (d / "t.h5").string();
  io::TokenDatasetWriter w(p, {"h", 20});
  w.add({1, 2, 3});
  const std::vector<int32_t> in1{4, 9, 6, 9};
  w.add({4, 5, 6, 7}, nullptr, &in1);
  const std::vector<int32_t> bad{4, 20, 6, 9};
  EXPECT_THROW(w.add({4, 5, 6, 7}, nullptr, &bad), InputError);  // outside the vocabulary
  w.add({8, 10});
  w.finish();
  io::TokenDataset ds = io::TokenDataset::open(p);
  ASSERT_TRUE(ds.has_inputs());
  const std::vector<int32_t> want_in{1, 2, 3, 4, 9, 6, 9, 8, 10};
  for (int64_t i = 0; i < ds.num_tokens(); ++i) EXPECT_EQ(ds.input(i), want_in[static_cast<size_t>(i)]) << i;
  auto shared = std::make_shared<io::TokenDataset>(ds);
  for (bool whole : {false, true}) {
    train::LoaderOptions opt;
    opt.seq_len = whole ? 4 : 9;
    opt.micro_batch = 1;
    opt.shuffle = false;
    opt.whole_documents = whole;
    train::DataLoader dl(shared, {0, 1, 2}, opt);
    std::vector<int32_t> in(static_cast<size_t>(opt.seq_len)), tg(in.size());
    dl.sequence(whole ? 1 : 0, in.data(), tg.data());  // whole: sequence 1 is document 1 alone
    const int32_t X = train::kIgnoreIndex;
    if (whole) {
      EXPECT_EQ(in, (std::vector<int32_t>{4, 9, 6, 9}));
      EXPECT_EQ(tg, (std::vector<int32_t>{5, 6, 7, X}));  // targets are the tokens
    } else {
      EXPECT_EQ(in, (std::vector<int32_t>{1, 2, 3, 4, 9, 6, 9, 8, 10}));
      EXPECT_EQ(tg, (std::vector<int32_t>{2, 3, X, 5, 6, 7, X, 10, X}));
    }
  }
  // A file whose input_tokens do not match the tokens is a clear error.
  {
    io::H5File f = io::H5File::create((d / "badin.h5").string());
    f.write("tokens", Tensor::from_data<int32_t>({1, 2, 3}, {3}));
    f.write("offsets", Tensor::from_data<int64_t>({0}, {1}));
    f.write("input_tokens", Tensor::from_data<int32_t>({1, 2}, {2}));
    f.set_attr("schema_version", int64_t(1));
    f.set_attr("vocab_size", int64_t(10));
    f.set_attr("tokenizer_hash", std::string("x"));
    f.close();
  }
  EXPECT_NE(input_error([&] { io::TokenDataset::open((d / "badin.h5").string()); }).find("input_tokens"),
            std::string::npos);
  fs::remove_all(d);
}

TEST(DataLoader, PacksLikeTheNaiveConcatenation) {
  const fs::path d = temp_dir("pack");
  auto ds = make_dataset(d, 23, true);
  std::vector<int64_t> all(23);
  for (int i = 0; i < 23; ++i) all[i] = i;
  for (bool mask : {true, false})
    for (int64_t T : {1, 5, 16, 400}) {  // 400 > the whole stream: one padded sequence
      train::LoaderOptions opt;
      opt.seq_len = T;
      opt.micro_batch = 3;
      opt.shuffle = false;
      opt.use_loss_mask = mask;
      train::DataLoader dl(ds, all, opt);
      const int64_t S = dl.sequences_per_epoch();
      EXPECT_EQ(S, std::max<int64_t>(1, (ds->num_tokens() - 1 + T - 1) / T));
      for (int64_t i = 0; i < S + 2; ++i) {  // into the second epoch (same order unshuffled)
        std::vector<int32_t> in(T), tg(T), rin, rtg;
        dl.sequence(i, in.data(), tg.data());
        naive_sequence(*ds, all, T, i % S, mask, rin, rtg);
        EXPECT_EQ(in, rin) << "T=" << T << " seq " << i;
        EXPECT_EQ(tg, rtg) << "T=" << T << " seq " << i;
      }
    }
  fs::remove_all(d);
}

/// The naive reference of whole-document packing: documents of `order` in turn, each starting
/// a new sequence when it does not fit in what is left (and is at most T long); longer ones
/// split. Returns every sequence's inputs and targets.
void naive_whole_documents(const io::TokenDataset& ds, const std::vector<int64_t>& order, int64_t T,
                           bool use_mask, std::vector<std::vector<int32_t>>& ins,
                           std::vector<std::vector<int32_t>>& tgs) {
  ins.clear();
  tgs.clear();
  int64_t used = T;
  for (int64_t d : order) {
    const int64_t L = ds.doc_len(d);
    if (L <= T && used + L > T) used = T;
    for (int64_t j = 0; j < L; ++j) {
      if (used == T) {
        ins.emplace_back(T, 0);
        tgs.emplace_back(T, train::kIgnoreIndex);
        used = 0;
      }
      const int64_t p = ds.doc_begin(d) + j;
      ins.back()[used] = ds.token(p);
      // the next token of the same document is this position's target
      if (j + 1 < L && (!use_mask || ds.is_target(p + 1))) tgs.back()[used] = ds.token(p + 1);
      ++used;
    }
  }
}

TEST(DataLoader, WholeDocumentsNeverSplitAFittingDocument) {
  const fs::path d = temp_dir("whole");
  auto ds = make_dataset(d, 23, true);  // lengths 1..13
  std::vector<int64_t> all(23);
  for (int i = 0; i < 23; ++i) all[i] = i;
  for (bool mask : {true, false})
    for (int64_t T : {1, 5, 13, 16, 400}) {
      train::LoaderOptions opt;
      opt.seq_len = T;
      opt.shuffle = false;
      opt.use_loss_mask = mask;
      opt.whole_documents = true;
      train::DataLoader dl(ds, all, opt);
      std::vector<std::vector<int32_t>> rin, rtg;
      naive_whole_documents(*ds, all, T, mask, rin, rtg);
      const int64_t S = dl.sequences_per_epoch();
      ASSERT_EQ(S, static_cast<int64_t>(rin.size())) << "T=" << T;
      for (int64_t i = 0; i < 2 * S + 1; ++i) {  // into the third epoch (same layout unshuffled)
        std::vector<int32_t> in(T), tg(T);
        dl.sequence(i, in.data(), tg.data());
        EXPECT_EQ(in, rin[i % S]) << "T=" << T << " seq " << i;
        EXPECT_EQ(tg, rtg[i % S]) << "T=" << T << " seq " << i;
      }
    }
  // Shuffled: every epoch holds every token once as an input, and a document of at most T
  // tokens sits whole in one sequence (token values encode document and position).
  const int64_t T = 16;
  train::LoaderOptions opt;
  opt.seq_len = T;
  opt.seed = 5;
  opt.whole_documents = true;
  train::DataLoader dl(ds, all, opt);
  int64_t index = 0;
  for (int64_t e = 0; e < 3; ++e) {
    std::multiset<int32_t> seen;
    std::set<int64_t> docs_seen;
    int64_t n = 0;
    // Sequences of epoch e: until the first document comes round again.
    for (;; ++index, ++n) {
      std::vector<int32_t> in(T), tg(T);
      dl.sequence(index, in.data(), tg.data());
      std::set<int64_t> here;
      for (int32_t t : in)
        if (t != 0) here.insert((t - 1) / 100);
      bool repeat = false;
      for (int64_t doc : here) repeat |= docs_seen.count(doc) > 0;
      if (repeat) break;
      for (int64_t doc : here) {
        docs_seen.insert(doc);
        const int64_t len = ds->doc_len(doc);
        int64_t count = 0;
        for (int32_t t : in) count += t != 0 && (t - 1) / 100 == doc;
        EXPECT_EQ(count, len) << "document " << doc << " split in epoch " << e;
      }
      for (int32_t t : in)
        if (t != 0) seen.insert(t);
    }
    EXPECT_EQ(static_cast<int64_t>(docs_seen.size()), 23) << "epoch " << e;
    EXPECT_EQ(static_cast<int64_t>(seen.size()), ds->num_tokens()) << "epoch " << e;
    EXPECT_GT(n, 0);
  }
  fs::remove_all(d);
}

TEST(DataLoader, ShufflesDeterministicallyPerEpoch) {
  const fs::path d = temp_dir("shuf");
  auto ds = make_dataset(d, 40, false);
  auto [train_docs, val_docs] = train::split_documents(ds->num_docs(), 0.0);
  train::LoaderOptions opt;
  opt.seq_len = 8;
  opt.seed = 11;
  train::DataLoader a(ds, train_docs, opt), b(ds, train_docs, opt);
  opt.seed = 12;
  train::DataLoader c(ds, train_docs, opt);
  const int64_t S = a.sequences_per_epoch();
  auto epoch_inputs = [&](const train::DataLoader& dl, int64_t e) {
    std::vector<int32_t> all;
    for (int64_t i = 0; i < S; ++i) {
      std::vector<int32_t> in(8), tg(8);
      dl.sequence(e * S + i, in.data(), tg.data());
      all.insert(all.end(), in.begin(), in.end());
    }
    return all;
  };
  const auto e0 = epoch_inputs(a, 0), e1 = epoch_inputs(a, 1);
  EXPECT_EQ(e0, epoch_inputs(b, 0));  // same seed, same order
  EXPECT_NE(e0, e1);                   // a new order each epoch
  EXPECT_NE(e0, epoch_inputs(c, 0));   // another seed, another order
  // Each epoch is a permutation of the documents: every token appears exactly once as an input
  // (the stream's last one only when the padded tail holds it), padding is token 0.
  const int64_t last_missing = (ds->num_tokens() - 1) % 8 == 0 ? 1 : 0;
  std::multiset<int32_t> want, got0(e0.begin(), e0.end()), got1(e1.begin(), e1.end());
  for (int64_t p = 0; p < ds->num_tokens(); ++p) want.insert(ds->token(p));
  for (auto* got : {&got0, &got1}) {
    std::multiset<int32_t> g = *got;
    int64_t missing = 0;
    for (int32_t t : want) {
      auto it = g.find(t);
      if (it == g.end()) {
        ++missing;
      } else {
        g.erase(it);
      }
    }
    EXPECT_EQ(missing, last_missing);
    for (int32_t t : g) EXPECT_EQ(t, 0);  // the rest is padding (token 0)
  }
  fs::remove_all(d);
}

TEST(DataLoader, ShardsAndResumesLikeOneRank) {
  const fs::path d = temp_dir("shard");
  auto ds = make_dataset(d, 31, true);
  auto [train_docs, val_docs] = train::split_documents(ds->num_docs(), 0.0);
  train::LoaderOptions opt;
  opt.seq_len = 6;
  opt.seed = 3;
  opt.micro_batch = 4;
  train::DataLoader one(ds, train_docs, opt);
  opt.micro_batch = 2;
  opt.world = 2;
  opt.rank = 0;
  train::DataLoader r0(ds, train_docs, opt);
  opt.rank = 1;
  train::DataLoader r1(ds, train_docs, opt);
  for (int step = 0; step < 20; ++step) {  // several epochs
    train::Batch b = one.next(), b0 = r0.next(), b1 = r1.next();
    auto v = b.inputs.to_vector(), v0 = b0.inputs.to_vector(), v1 = b1.inputs.to_vector();
    v0.insert(v0.end(), v1.begin(), v1.end());
    EXPECT_EQ(v, v0) << "step " << step;
    auto t = b.targets.to_vector(), t0 = b0.targets.to_vector(), t1 = b1.targets.to_vector();
    t0.insert(t0.end(), t1.begin(), t1.end());
    EXPECT_EQ(t, t0) << "step " << step;
    EXPECT_EQ(b.num_targets, b0.num_targets + b1.num_targets);
  }
  // Resume: a fresh loader at the saved position continues identically.
  opt.world = 1;
  opt.rank = 0;
  opt.micro_batch = 4;
  train::DataLoader resumed(ds, train_docs, opt);
  resumed.set_position(one.position());
  for (int step = 0; step < 5; ++step)
    EXPECT_EQ(one.next().targets.to_vector(), resumed.next().targets.to_vector());
  fs::remove_all(d);
}

TEST(DataLoader, HeldOutSplitIsDisjointAndStable) {
  auto [tr, va] = train::split_documents(1000, 0.05);
  EXPECT_EQ(va.size(), 50u);
  EXPECT_EQ(tr.size(), 950u);
  std::set<int64_t> all(tr.begin(), tr.end());
  for (int64_t v : va) EXPECT_TRUE(all.insert(v).second) << v;
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_EQ(train::split_documents(1000, 0.05).second, va);
  EXPECT_NE(va.back() - va.front(), 49);  // scattered, not a tail slice
  EXPECT_THROW(train::split_documents(2, 0.5 + 0.3), InputError);
}

}  // namespace
}  // namespace lizard
