// `lizard prepare-data`: tokenizes Alpaca JSON/JSONL, plain text or {"text"} JSONL with the
// model's own tokenizer.json into an HDF5 token dataset (DESIGN.md section 5).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>

#include "lizard/cli/commands.h"
#include "lizard/core/error.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/io/tokenizer.h"
#include "lizard/train/data_prep.h"

namespace lizard::cli {

namespace {

struct PrepareArgs {
  std::string tokenizer;
  std::vector<std::string> inputs;
  std::string output;
  std::string format = "alpaca";
  bool one_per_line = false;
  bool no_eos = false;
  int64_t eos_id = -1;
  int64_t max_tokens = 0;
  int64_t max_docs = 0;
  std::string prompt_input, prompt_no_input;
};

/// EOS for the end of each document: --eos-id, else the usual end-of-text tokens by name.
int32_t pick_eos(const io::Tokenizer& tok, const PrepareArgs& a) {
  if (a.no_eos) return -1;
  if (a.eos_id >= 0) {
    LZ_INPUT_CHECK(a.eos_id < tok.vocab_size(), "--eos-id ", a.eos_id, " outside the vocabulary of ",
                   tok.vocab_size());
    return static_cast<int32_t>(a.eos_id);
  }
  if (tok.eos_id() >= 0) return tok.eos_id();
  for (const char* name : {"<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>"}) {
    const int32_t id = tok.token_to_id(name);
    if (id >= 0) return id;
  }
  std::fprintf(stderr, "warning: no EOS token found (pass --eos-id); documents get none\n");
  return -1;
}

void run_prepare(const PrepareArgs& a) {
  std::string tok_path = a.tokenizer;
  if (std::filesystem::is_directory(tok_path))
    tok_path = (std::filesystem::path(tok_path) / "tokenizer.json").string();
  LZ_INPUT_CHECK(std::filesystem::exists(tok_path), "tokenizer not found: ", tok_path);
  const io::Tokenizer tok = io::Tokenizer::from_file(tok_path);
  const int32_t eos = pick_eos(tok, a);
  train::AlpacaTemplate tmpl;
  if (!a.prompt_input.empty()) tmpl.with_input = a.prompt_input;
  if (!a.prompt_no_input.empty()) tmpl.no_input = a.prompt_no_input;
  const train::Encoder encode = [&tok](const std::string& s, bool special) {
    return tok.encode(s, special);
  };
  io::TokenDatasetWriter writer(a.output, {train::file_hash(tok_path), tok.vocab_size()});
  int64_t masked = 0;
  for (const std::string& in : a.inputs) {
    std::vector<train::RawDocument> docs;
    if (a.format == "alpaca") {
      docs = train::read_alpaca(in, tmpl);
    } else if (a.format == "text") {
      docs = train::read_text(in, a.one_per_line);
    } else {
      docs = train::read_jsonl_text(in);
    }
    for (const auto& d : docs) {
      if (a.max_docs > 0 && writer.num_docs() >= a.max_docs) break;
      train::TokenizedDocument t = train::tokenize_document(d, encode, eos, a.max_tokens);
      if (t.tokens.empty()) continue;
      for (uint8_t m : t.mask) masked += m == 0;
      writer.add(t.tokens, a.format == "alpaca" ? &t.mask : nullptr);
    }
  }
  const int64_t docs = writer.num_docs(), tokens = writer.num_tokens();
  writer.finish();
  std::printf("wrote %s: %lld documents, %lld tokens (%lld prompt tokens masked), vocab %lld\n",
              a.output.c_str(), static_cast<long long>(docs), static_cast<long long>(tokens),
              static_cast<long long>(masked), static_cast<long long>(tok.vocab_size()));
}

}  // namespace

void register_prepare_data(CLI::App& app) {
  auto args = std::make_shared<PrepareArgs>();
  CLI::App* cmd = app.add_subcommand("prepare-data", "Tokenize text or instruction data into an HDF5 token dataset");
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json, or a model directory holding one")->required();
  cmd->add_option("-i,--input", args->inputs, "input files (repeatable)")->required();
  cmd->add_option("-o,--output", args->output, "output .h5 file")->required();
  cmd->add_option("--format", args->format, "alpaca (JSON list or JSONL of instruction/input/output), text, jsonl ({\"text\": ...})")
      ->check(CLI::IsMember({"alpaca", "text", "jsonl"}));
  cmd->add_flag("--one-per-line", args->one_per_line, "text: one document per line (default: blank-line separated)");
  cmd->add_flag("--no-eos", args->no_eos, "do not append EOS to each document");
  cmd->add_option("--eos-id", args->eos_id, "EOS token id (default: from the tokenizer)");
  cmd->add_option("--max-tokens", args->max_tokens, "truncate documents to this many tokens (0 = no limit)");
  cmd->add_option("--max-docs", args->max_docs, "stop after this many documents (0 = all)");
  cmd->add_option("--prompt-input", args->prompt_input, "alpaca template with {instruction} and {input}");
  cmd->add_option("--prompt-no-input", args->prompt_no_input, "alpaca template with {instruction}, for empty inputs");
  cmd->callback([args]() { run_prepare(*args); });
}

}  // namespace lizard::cli
