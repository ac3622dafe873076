// `lizard eval --model DIR --task ppl|mc|mqar|passkey`: evaluates a teacher, a student or a
// hybrid (HF directory, lizard checkpoint, export directory: eval::load_model_for_inference).
// Prints one JSON line of results to stdout and a human-readable summary to stderr.
//   ppl      perplexity on --data: a token file (ids per line) or an HDF5 token dataset (its
//            loss mask honoured unless --all-tokens); chunks of --max-len without overlap
//   mc       lm-eval multiple-choice scoring of a JSONL (context, choices, gold): acc, acc_norm
//   mqar     synthetic associative recall in the demo vocabulary: accuracy overall and split
//            by distance inside / beyond the window (--window, default the model's)
//   passkey  passkey retrieval at --lengths (may exceed the training length)
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli_common.h"
#include "lizard/cli/commands.h"
#include "lizard/eval/model_loader.h"
#include "lizard/eval/multiple_choice.h"
#include "lizard/eval/perplexity.h"
#include "lizard/eval/recall_eval.h"
#include "lizard/eval/text_codec.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/io/json.h"
#include "lizard/ops/lizard_config.h"

namespace lizard::cli {

namespace {

struct EvalArgs {
  std::string model, task = "ppl", data, device = "auto", tokenizer;
  bool teacher = false, all_tokens = false, no_bos = false;
  int64_t max_len = 2048, batch_size = 8, limit = 0;
  // mqar
  int64_t num_keys = 64, num_values = 64, pairs = 8, seq_len = 128, queries = 0, samples = 200;
  int64_t min_distance = 1, max_distance = 0, window = -1;
  bool replace_queries = false, random_filler = false, hide_answers = false;
  // passkey
  std::vector<int64_t> lengths{128, 256, 512};
  std::vector<double> depths{0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials = 4, digits = 5;
  uint64_t seed = 1234;
};

// Sequences of a token file or dataset; with a dataset's mask (unless all_tokens) only its
// targets count.
std::vector<eval::TokenDocument> read_documents(const std::string& path, bool all_tokens) {
  LZ_INPUT_CHECK(!path.empty(), "--data: required for --task ppl");
  std::vector<eval::TokenDocument> docs;
  if (path.size() > 3 && path.substr(path.size() - 3) == ".h5") {
    io::TokenDataset ds = io::TokenDataset::open(path);
    for (int64_t d = 0; d < ds.num_docs(); ++d) {
      eval::TokenDocument doc;
      for (int64_t p = ds.doc_begin(d); p < ds.doc_end(d); ++p) {
        doc.tokens.push_back(ds.token(p));
        if (ds.has_inputs()) doc.inputs.push_back(ds.input(p));
        doc.loss_mask.push_back(all_tokens || ds.is_target(p) ? 1 : 0);
      }
      if (doc.tokens.size() >= 2) docs.push_back(std::move(doc));
    }
    return docs;
  }
  std::ifstream f(path);
  LZ_INPUT_CHECK(f.good(), "--data: cannot read '", path, "'");
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    std::istringstream is(line);
    eval::TokenDocument doc;
    std::string tok;
    while (is >> tok) {
      try {
        doc.tokens.push_back(static_cast<int32_t>(std::stol(tok)));
      } catch (const std::exception&) {
        throw InputError(str_cat("--data: ", path, ":", lineno, ": '", tok, "' is not a token id"));
      }
    }
    doc.loss_mask.assign(doc.tokens.size(), 1);
    if (doc.tokens.size() >= 2) docs.push_back(std::move(doc));
  }
  return docs;
}

io::Json task_ppl(const EvalArgs& a, const eval::InferenceModel& m, const eval::EvalOptions& eo) {
  const int64_t V = m.model->config().vocab_size;
  const auto docs = read_documents(a.data, a.all_tokens);
  for (const auto& d : docs)
    for (int32_t t : d.tokens)
      LZ_INPUT_CHECK(t >= 0 && t < V, "--data: token id ", t, " in '", a.data,
                     "' is outside the model's vocabulary of ", V);
  eval::PerplexityOptions po;
  static_cast<eval::EvalOptions&>(po) = eo;
  po.max_length = a.max_len;
  const eval::PerplexityResult r = eval::perplexity(*m.model, docs, po);
  LZ_INPUT_CHECK(r.tokens > 0, "--data: '", a.data, "' holds no counted token (sequences of 2 or more)");
  std::fprintf(stderr, "ppl  %s: %.4f (mean nll %.4f over %lld tokens)\n", a.data.c_str(),
               r.perplexity(), r.mean_nll(), static_cast<long long>(r.tokens));
  io::Json j = io::Json::object();
  j.set("data", a.data);
  j.set("tokens", r.tokens);
  j.set("nll", r.mean_nll());
  j.set("ppl", r.perplexity());
  return j;
}

io::Json task_mc(const EvalArgs& a, const eval::InferenceModel& m, const eval::EvalOptions& eo) {
  LZ_INPUT_CHECK(!a.data.empty(), "--data: required for --task mc (a JSONL of context, choices, gold)");
  std::vector<eval::McExample> ex = eval::load_mc_jsonl(a.data);
  if (a.limit > 0 && static_cast<int64_t>(ex.size()) > a.limit) ex.resize(static_cast<size_t>(a.limit));
  LZ_INPUT_CHECK(!ex.empty(), "--data: '", a.data, "' holds no example");
  const eval::TextCodec codec = eval::text_codec_for(m, a.tokenizer);
  eval::McOptions mo;
  static_cast<eval::EvalOptions&>(mo) = eo;
  mo.bos = a.no_bos ? -1 : codec.bos;
  mo.max_length = a.max_len;
  const eval::McResult r = eval::multiple_choice(*m.model, ex, codec.encode, mo);
  std::fprintf(stderr, "mc   %s: acc %.4f  acc_norm %.4f  (%lld examples, tokenizer %s)\n",
               a.data.c_str(), r.acc, r.acc_norm, static_cast<long long>(r.count), codec.name.c_str());
  io::Json j = io::Json::object();
  j.set("data", a.data);
  j.set("examples", r.count);
  j.set("acc", r.acc);
  j.set("acc_norm", r.acc_norm);
  return j;
}

eval::SyntheticVocab demo_vocab(const EvalArgs& a, const eval::InferenceModel& m) {
  eval::SyntheticVocabSpec vs;
  vs.num_keys = a.num_keys;
  vs.num_values = a.num_values;
  eval::SyntheticVocab vocab(vs);
  LZ_INPUT_CHECK(vocab.size() <= m.model->config().vocab_size, "--task ", a.task,
                 ": the demo vocabulary (", vocab.size(), " words with --num-keys ", a.num_keys,
                 " --num-values ", a.num_values, ") does not fit the model's vocabulary of ",
                 m.model->config().vocab_size);
  return vocab;
}

io::Json task_mqar(const EvalArgs& a, const eval::InferenceModel& m, const eval::EvalOptions& eo) {
  const eval::SyntheticVocab vocab = demo_vocab(a, m);
  eval::MqarSpec spec;
  spec.seq_len = a.seq_len;
  spec.num_pairs = a.pairs;
  spec.num_queries = a.queries;
  spec.min_distance = a.min_distance;
  spec.max_distance = a.max_distance;
  spec.replace_queries = a.replace_queries;
  spec.random_filler = a.random_filler;
  spec.hide_answers = a.hide_answers;
  LZ_INPUT_CHECK(a.samples >= 1, "--samples: must be >= 1, got ", a.samples);
  int64_t window = a.window >= 0 ? a.window : m.window;
  if (window <= 0 && a.window < 0) {
    // A plain Hugging Face teacher has no window: split where a default student's would be.
    window = ops::LizardConfig{}.window;
    std::fprintf(stderr, "mqar: the model has no Lizard window; splitting at the default %lld "
                         "(pass --window)\n", static_cast<long long>(window));
  }
  const auto samples = eval::mqar_samples(vocab, spec, a.samples, a.seed);
  const eval::MqarResult r = eval::mqar_accuracy(*m.model, samples, window, eo);
  std::fprintf(stderr,
               "mqar seq %lld, %lld pairs, window %lld: accuracy %.4f (%lld queries); inside "
               "%.4f (%lld), beyond %.4f (%lld)\n",
               static_cast<long long>(a.seq_len), static_cast<long long>(a.pairs),
               static_cast<long long>(window), r.accuracy(), static_cast<long long>(r.queries),
               r.inside_accuracy(), static_cast<long long>(r.inside), r.beyond_accuracy(),
               static_cast<long long>(r.beyond));
  io::Json j = io::Json::object();
  j.set("seq_len", a.seq_len);
  j.set("pairs", a.pairs);
  j.set("samples", a.samples);
  j.set("window", window);
  j.set("queries", r.queries);
  j.set("accuracy", r.accuracy());
  j.set("inside", r.inside);
  j.set("inside_accuracy", r.inside_accuracy());
  j.set("beyond", r.beyond);
  j.set("beyond_accuracy", r.beyond_accuracy());
  io::Json slots = io::Json::array();
  for (size_t i = 0; i < r.slot_queries.size(); ++i)
    slots.push_back(eval::MqarResult::ratio(r.slot_correct[i], r.slot_queries[i]));
  j.set("accuracy_by_pair_slot", slots);
  return j;
}

io::Json task_passkey(const EvalArgs& a, const eval::InferenceModel& m, const eval::EvalOptions& eo) {
  const eval::SyntheticVocab vocab = demo_vocab(a, m);
  LZ_INPUT_CHECK(!a.lengths.empty() && !a.depths.empty() && a.trials >= 1,
                 "--task passkey: needs --lengths, --depths and --trials >= 1");
  eval::PasskeySpec spec;
  spec.num_digits = a.digits;
  const auto rs =
      eval::passkey_accuracy(*m.model, vocab, a.lengths, a.depths, a.trials, a.seed, spec, eo);
  io::Json per = io::Json::array();
  for (const eval::PasskeyResult& r : rs) {
    std::fprintf(stderr, "passkey length %6lld: accuracy %.4f  digit accuracy %.4f  (%lld samples)\n",
                 static_cast<long long>(r.length), r.accuracy(), r.digit_accuracy(),
                 static_cast<long long>(r.samples));
    io::Json o = io::Json::object();
    o.set("length", r.length);
    o.set("samples", r.samples);
    o.set("accuracy", r.accuracy());
    o.set("digit_accuracy", r.digit_accuracy());
    per.push_back(std::move(o));
  }
  io::Json j = io::Json::object();
  j.set("digits", a.digits);
  j.set("results", std::move(per));
  return j;
}

void run_eval(const EvalArgs& a) {
  LoadedModel loaded = load_inference_model(a.model, a.device);
  const Device dev = loaded.device;
  eval::InferenceModel& m = loaded.model;
  eval::EvalOptions eo;
  eo.teacher = a.teacher || !m.student;
  eo.batch_size = a.batch_size;
  const char* path = eo.teacher ? "teacher" : "student";
  std::fprintf(stderr, "[eval] %s: %s model (%s%s), %lld of %lld layers linearized, %s path on %s\n",
               a.model.c_str(), m.kind.c_str(), m.dir.c_str(),
               m.stage.empty() ? "" : (", stage " + m.stage).c_str(),
               static_cast<long long>(m.linearized_layers),
               static_cast<long long>(m.model->config().num_hidden_layers), path, dev.str().c_str());
  io::Json res;
  if (a.task == "ppl") res = task_ppl(a, m, eo);
  else if (a.task == "mc") res = task_mc(a, m, eo);
  else if (a.task == "mqar") res = task_mqar(a, m, eo);
  else if (a.task == "passkey") res = task_passkey(a, m, eo);
  else throw InputError("--task: '" + a.task + "' is not one of ppl, mc, mqar, passkey");
  io::Json out = io::Json::object();
  out.set("task", a.task);
  out.set("model", a.model);
  out.set("path", path);
  out.set("linearized_layers", m.linearized_layers);
  for (size_t i = 0; i < res.keys().size(); ++i) out.set(res.keys()[i], res.values()[i]);
  print_json(out);
}

}  // namespace

void register_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Evaluate a model: perplexity, multiple choice, MQAR recall, passkey retrieval");
  add_model_option(*cmd, a->model);
  cmd->add_option("--task", a->task, "ppl | mc | mqar | passkey");
  cmd->add_option("--data", a->data, "ppl: token file (ids per line) or .h5 dataset; mc: JSONL");
  add_inference_device_option(*cmd, a->device);
  add_tokenizer_option(*cmd, a->tokenizer, "mc: ");
  add_teacher_flag(*cmd, a->teacher, "evaluate");
  cmd->add_option("--max-len", a->max_len, "longest window scored at once (ppl, mc)");
  cmd->add_option("--batch-size", a->batch_size, "sequences per forward");
  cmd->add_flag("--all-tokens", a->all_tokens, "ppl: count every token, ignoring a dataset's loss mask");
  cmd->add_option("--limit", a->limit, "mc: first N examples only (0 = all)");
  cmd->add_flag("--no-bos", a->no_bos, "mc: do not prepend the tokenizer's BOS");
  cmd->add_option("--num-keys", a->num_keys, "mqar/passkey: demo vocabulary keys (the model's)");
  cmd->add_option("--num-values", a->num_values, "mqar/passkey: demo vocabulary values");
  cmd->add_option("--pairs", a->pairs, "mqar: key-value pairs per sequence");
  cmd->add_option("--seq-len", a->seq_len, "mqar: tokens per sequence");
  cmd->add_option("--queries", a->queries, "mqar: queries per sequence (0 = one per pair)");
  cmd->add_option("--samples", a->samples, "mqar: sequences");
  cmd->add_flag("--replace-queries", a->replace_queries, "mqar: query keys drawn with replacement");
  cmd->add_flag("--random-filler", a->random_filler, "mqar: random non-key, non-value words between queries");
  cmd->add_flag("--hide-answers", a->hide_answers, "mqar: answers are labels only (a filler word is read there)");
  cmd->add_option("--min-distance", a->min_distance, "mqar: smallest query-to-key distance");
  cmd->add_option("--max-distance", a->max_distance, "mqar: largest distance (0 = unbounded)");
  cmd->add_option("--window", a->window,
                  "mqar: split inside/beyond at this distance (default: the model's Lizard window)");
  cmd->add_option("--lengths", a->lengths, "passkey: prompt lengths")->delimiter(',');
  cmd->add_option("--depths", a->depths, "passkey: needle depths in [0, 1]")->delimiter(',');
  cmd->add_option("--trials", a->trials, "passkey: samples per length and depth");
  cmd->add_option("--digits", a->digits, "passkey: digits of the key");
  cmd->add_option("--seed", a->seed, "mqar/passkey: sample stream (training used others)");
  cmd->callback([a]() { run_eval(*a); });
}

}  // namespace lizard::cli
