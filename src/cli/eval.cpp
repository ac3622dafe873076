// `lizard eval --model DIR --task ppl --data FILE`: perplexity of a model on a token file (one
// sequence of ids per line, whitespace separated) or an HDF5 token dataset (eval::perplexity:
// sequences longer than --max-len are cut into chunks without overlap).
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "lizard/cli/commands.h"
#include "lizard/core/device.h"
#include "lizard/eval/perplexity.h"
#include "lizard/io/export.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/io/hf_model.h"

namespace lizard::cli {

namespace {
struct EvalArgs {
  std::string model, task = "ppl", data, device = "auto";
  int64_t max_len = 2048;
};

std::vector<std::vector<int32_t>> read_sequences(const std::string& path) {
  std::vector<std::vector<int32_t>> seqs;
  if (path.size() > 3 && path.substr(path.size() - 3) == ".h5") {
    io::TokenDataset ds = io::TokenDataset::open(path);
    for (int64_t d = 0; d < ds.num_docs(); ++d) {
      std::vector<int32_t> s;
      for (int64_t p = ds.doc_begin(d); p < ds.doc_end(d); ++p) s.push_back(ds.token(p));
      seqs.push_back(std::move(s));
    }
    return seqs;
  }
  std::ifstream f(path);
  LZ_INPUT_CHECK(f.good(), "--data: cannot read '", path, "'");
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    std::istringstream is(line);
    std::vector<int32_t> s;
    std::string tok;
    while (is >> tok) {
      try {
        s.push_back(static_cast<int32_t>(std::stol(tok)));
      } catch (const std::exception&) {
        throw InputError(str_cat("--data: ", path, ":", lineno, ": '", tok, "' is not a token id"));
      }
    }
    if (s.size() >= 2) seqs.push_back(std::move(s));
  }
  return seqs;
}

void run_eval(const EvalArgs& a) {
  LZ_INPUT_CHECK(a.task == "ppl", "--task: '", a.task, "' is not available here yet (supported: ppl)");
  io::LoadOptions lo;
  lo.device = a.device == "auto" ? (cuda_available() ? Device::cuda(0) : Device::cpu())
                                 : Device::parse(a.device);
  lo.dtype = lo.device.is_cuda() ? DType::BF16 : DType::F32;
  auto model = io::load_hf_model(a.model, lo);
  const int64_t V = model->config().vocab_size;
  const auto seqs = read_sequences(a.data);
  for (const auto& seq : seqs)
    for (int32_t t : seq)
      LZ_INPUT_CHECK(t >= 0 && t < V, "--data: token id ", t, " outside the vocabulary of ", V);
  eval::PerplexityOptions po;
  po.max_length = a.max_len;
  // A lizard export (or any model with Lizard layers) is scored as the student it is.
  po.teacher = !io::lizard_section_of(*model).has_value();
  const eval::PerplexityResult r = eval::perplexity(*model, seqs, po);
  const int64_t count = r.tokens;
  LZ_INPUT_CHECK(count > 0, "--data: '", a.data, "' holds no sequence of 2 or more tokens");
  std::printf("{\"task\": \"ppl\", \"model\": \"%s\", \"tokens\": %lld, \"nll\": %.6f, \"ppl\": %.6f}\n",
              a.model.c_str(), static_cast<long long>(count), r.mean_nll(), r.perplexity());
}
}  // namespace

void register_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "Evaluate a model (perplexity on a token file)");
  cmd->add_option("--model", a->model, "Hugging Face model directory")->required();
  cmd->add_option("--task", a->task, "ppl");
  cmd->add_option("--data", a->data, "token file (ids per line) or HDF5 dataset")->required();
  cmd->add_option("--device", a->device, "auto, cpu, cuda or cuda:N");
  cmd->add_option("--max-len", a->max_len, "longest window scored at once");
  cmd->callback([a]() { run_eval(*a); });
}

}  // namespace lizard::cli
