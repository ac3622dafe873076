#include "lizard/eval/multiple_choice.h"

#include <algorithm>
#include <limits>
#include <sstream>

#include "lizard/core/error.h"
#include "lizard/io/json.h"

namespace lizard::eval {

namespace {

// One JSONL record, read with the project's JSON parser (its errors name source, line, column).
McExample parse_record(const std::string& line, const std::string& where) {
  const io::Json n = io::parse_json(line, where);
  LZ_INPUT_CHECK(n.is_object(), where, ": expected a JSON object, got ", n.type_name());
  McExample ex;
  const io::Json* context = n.find("context");
  LZ_INPUT_CHECK(context && context->is_string(), where, ": missing string field 'context'");
  ex.context = context->as_string();
  const io::Json* choices = n.find("choices");
  LZ_INPUT_CHECK(choices && choices->is_array(), where, ": missing array field 'choices'");
  for (const io::Json& c : choices->items()) {
    LZ_INPUT_CHECK(c.is_string(), where, ": every choice must be a string, got ", c.type_name());
    ex.choices.push_back(c.as_string());
  }
  const io::Json* gold = n.find("gold");
  if (!gold) gold = n.find("answer");
  if (!gold) gold = n.find("label");
  LZ_INPUT_CHECK(gold, where, ": missing integer field 'gold' (or 'answer'/'label')");
  LZ_INPUT_CHECK(gold->is_number(), where, ": 'gold' must be an integer, got ", gold->type_name());
  try {
    ex.gold = gold->as_int();
  } catch (const InputError& e) {
    throw InputError(str_cat(where, ": 'gold' must be an integer: ", e.what()));
  }
  LZ_INPUT_CHECK(ex.choices.size() >= 2, where, ": 'choices' needs at least 2 entries, got ",
                 ex.choices.size());
  LZ_INPUT_CHECK(ex.gold >= 0 && ex.gold < static_cast<int64_t>(ex.choices.size()), where,
                 ": gold ", ex.gold, " is outside [0, ", ex.choices.size(), ")");
  return ex;
}

struct Request {
  size_t example, choice;
  std::vector<int32_t> input;    // (context + continuation)[:-1], left-truncated
  std::vector<int32_t> targets;  // -1 except on the continuation tokens
};

}  // namespace

int64_t utf8_length(const std::string& s) {
  return std::count_if(s.begin(), s.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

std::vector<McExample> parse_mc_jsonl(const std::string& text, const std::string& source) {
  std::vector<McExample> out;
  std::istringstream is(text);
  std::string line;
  for (int64_t lineno = 1; std::getline(is, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back(parse_record(line, str_cat(source, ":", lineno)));
  }
  return out;
}

std::vector<McExample> load_mc_jsonl(const std::string& path) {
  return parse_mc_jsonl(io::read_text_file(path), path);
}

std::pair<int64_t, int64_t> mc_predictions(const std::vector<double>& lls,
                                           const std::vector<std::string>& choices) {
  LZ_CHECK(!lls.empty() && lls.size() == choices.size(), "mc_predictions: ", lls.size(),
           " log-likelihoods for ", choices.size(), " choices");
  std::vector<double> norm(lls.size());
  for (size_t i = 0; i < lls.size(); ++i) {
    const int64_t len = utf8_length(choices[i]);
    // numpy divides by 0.0 here (-inf or nan); an empty choice simply never wins acc_norm.
    norm[i] = len > 0 ? lls[i] / static_cast<double>(len) : -std::numeric_limits<double>::infinity();
  }
  return {argmax(lls), argmax(norm)};
}

McResult multiple_choice(const nn::LlamaForCausalLM& model, const std::vector<McExample>& examples,
                         const Encoder& encode, const McOptions& opt) {
  LZ_INPUT_CHECK(opt.batch_size >= 1, "multiple_choice: batch_size must be >= 1");
  LZ_INPUT_CHECK(opt.max_length >= 1, "multiple_choice: max_length must be >= 1");
  std::vector<Request> reqs;
  for (size_t e = 0; e < examples.size(); ++e) {
    const McExample& ex = examples[e];
    for (size_t c = 0; c < ex.choices.size(); ++c) {
      std::string context = ex.context, cont = opt.delimiter + ex.choices[c];
      const size_t keep = context.find_last_not_of(' ');
      const size_t n_spaces = keep == std::string::npos ? context.size() : context.size() - keep - 1;
      if (n_spaces > 0) {
        cont = context.substr(context.size() - n_spaces) + cont;
        context.resize(context.size() - n_spaces);
      }
      const std::vector<int32_t> whole = encode(context + cont);
      std::vector<int32_t> ctx = context.empty() ? std::vector<int32_t>{} : encode(context);
      LZ_INPUT_CHECK(ctx.size() <= whole.size() && std::equal(ctx.begin(), ctx.end(), whole.begin()),
                     "multiple_choice: example ", e, ": the context's tokens are not a prefix of "
                     "context + choice ", c, "'s tokens");
      std::vector<int32_t> cont_ids(whole.begin() + static_cast<std::ptrdiff_t>(ctx.size()), whole.end());
      LZ_INPUT_CHECK(!cont_ids.empty(), "multiple_choice: example ", e, " choice ", c,
                     " encodes to no tokens");
      if (opt.bos >= 0) ctx.insert(ctx.begin(), opt.bos);
      LZ_INPUT_CHECK(!ctx.empty(), "multiple_choice: example ", e,
                     " has an empty context and no bos token to condition on");
      std::vector<int32_t> full = ctx;
      full.insert(full.end(), cont_ids.begin(), cont_ids.end());
      if (static_cast<int64_t>(full.size()) > opt.max_length + 1)
        full.erase(full.begin(), full.end() - (opt.max_length + 1));
      Request r{e, c, {full.begin(), full.end() - 1}, {}};
      r.targets.assign(r.input.size(), -1);
      // Position of the first scored token; a continuation longer than the context window
      // keeps only what fits (the first token has nothing to condition on).
      const size_t first = full.size() > cont_ids.size() ? full.size() - cont_ids.size() : 1;
      for (size_t p = first; p < full.size(); ++p) r.targets[p - 1] = full[p];
      reqs.push_back(std::move(r));
    }
  }

  McResult res;
  res.count = static_cast<int64_t>(examples.size());
  res.lls.resize(examples.size());
  for (size_t e = 0; e < examples.size(); ++e) res.lls[e].assign(examples[e].choices.size(), 0.0);
  const Device dev = model_device(model);
  for (size_t i = 0; i < reqs.size(); i += static_cast<size_t>(opt.batch_size)) {
    const size_t end = std::min(reqs.size(), i + static_cast<size_t>(opt.batch_size));
    std::vector<std::vector<int32_t>> rows;
    for (size_t k = i; k < end; ++k) rows.push_back(reqs[k].input);
    const Tensor logits = eval_logits(model, make_batch(rows, 0, dev), opt.teacher);
    for (size_t k = i; k < end; ++k) {
      std::vector<int32_t> targets = reqs[k].targets;
      targets.resize(static_cast<size_t>(logits.size(1)), -1);
      res.lls[reqs[k].example][reqs[k].choice] = -nll_sum(logits.select(0, static_cast<int64_t>(k - i)), targets).first;
    }
  }
  int64_t hits = 0, hits_norm = 0;
  for (size_t e = 0; e < examples.size(); ++e) {
    const auto [p, pn] = mc_predictions(res.lls[e], examples[e].choices);
    res.pred.push_back(p);
    res.pred_norm.push_back(pn);
    hits += p == examples[e].gold;
    hits_norm += pn == examples[e].gold;
  }
  if (res.count > 0) {
    res.acc = static_cast<double>(hits) / static_cast<double>(res.count);
    res.acc_norm = static_cast<double>(hits_norm) / static_cast<double>(res.count);
  }
  return res;
}

}  // namespace lizard::eval
