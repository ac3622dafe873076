// `lizard make-demo-data --out DIR`: the embedded demo's corpus (grammar text + MQAR recall
// sequences over a synthetic word vocabulary), written as HDF5 token datasets train.h5 and
// val.h5 (different seeds). Nothing is downloaded. With --random-vocab V it writes uniformly
// random tokens over [0, V) instead (throughput runs at a real model's vocabulary).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>

#include "lizard/cli/commands.h"
#include "lizard/eval/random_tokens.h"
#include "lizard/eval/synthetic.h"

namespace lizard::cli {

void register_demo_data(CLI::App& app) {
  struct Args {
    std::string out = "runs/demo/data";
    int64_t grammar_docs = 2000, mqar_docs = 2000, seq_len = 128, pairs = 8;
    uint64_t seed = 0;
    int64_t random_vocab = 0, random_docs = 256, random_doc_len = 2048;
    int64_t min_pairs = 0, queries = 0;
    bool replace_queries = false, random_filler = false, hide_answers = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("make-demo-data", "Write the demo's synthetic datasets (grammar text + MQAR)");
  cmd->add_option("--out", a->out, "output directory (train.h5, val.h5)");
  cmd->add_option("--grammar-docs", a->grammar_docs, "grammar documents in train.h5");
  cmd->add_option("--mqar-docs", a->mqar_docs, "MQAR sequences in train.h5");
  cmd->add_option("--seq-len", a->seq_len, "MQAR sequence length");
  cmd->add_option("--pairs", a->pairs, "key-value pairs per MQAR sequence");
  cmd->add_option("--mqar-min-pairs", a->min_pairs,
                  "MQAR: each sequence draws its pair count from [this, --pairs] (0: always --pairs)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_option("--mqar-queries", a->queries, "MQAR: queries per sequence (0: one per pair)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_flag("--mqar-replace-queries", a->replace_queries,
                "MQAR: query keys drawn with replacement (no answering by elimination)");
  cmd->add_flag("--mqar-random-filler", a->random_filler,
                "MQAR: random non-key, non-value words between the queries instead of '-'");
  cmd->add_flag("--mqar-hide-answers", a->hide_answers,
                "MQAR: answers are labels only (the model reads a filler word there; input_tokens)");
  cmd->add_option("--seed", a->seed, "seed of train.h5 (val.h5 uses seed + 1)");
  cmd->add_option("--random-vocab", a->random_vocab,
                  "instead of the demo corpus: uniformly random tokens over [0, V), every token a target")
      ->check(CLI::Range(int64_t{0}, (int64_t{1} << 31) - 1));
  cmd->add_option("--random-docs", a->random_docs, "with --random-vocab: documents in train.h5 (val.h5: a tenth)");
  cmd->add_option("--random-doc-len", a->random_doc_len, "with --random-vocab: tokens per document");
  cmd->callback([a]() {
    std::filesystem::create_directories(a->out);
    if (a->random_vocab > 0) {
      for (int split = 0; split < 2; ++split) {
        eval::RandomTokensSpec spec;
        spec.vocab_size = a->random_vocab;
        spec.num_docs = split == 0 ? a->random_docs : std::max<int64_t>(1, a->random_docs / 10);
        spec.doc_len = a->random_doc_len;
        spec.seed = a->seed + split;
        const std::string path = a->out + (split == 0 ? "/train.h5" : "/val.h5");
        eval::write_random_token_dataset(path, spec);
        std::printf("wrote %s (%lld random documents of %lld tokens, vocabulary %lld)\n",
                    path.c_str(), static_cast<long long>(spec.num_docs),
                    static_cast<long long>(spec.doc_len), static_cast<long long>(spec.vocab_size));
      }
      return;
    }
    eval::SyntheticVocab vocab;
    for (int split = 0; split < 2; ++split) {
      eval::DemoDataSpec spec;
      spec.seed = a->seed + split;
      spec.grammar_docs = split == 0 ? a->grammar_docs : std::max<int64_t>(1, a->grammar_docs / 10);
      spec.mqar_docs = split == 0 ? a->mqar_docs : std::max<int64_t>(1, a->mqar_docs / 10);
      spec.mqar.seq_len = a->seq_len;
      spec.mqar.num_pairs = a->pairs;
      spec.mqar.min_pairs = a->min_pairs;
      spec.mqar.num_queries = a->queries;
      spec.mqar.replace_queries = a->replace_queries;
      spec.mqar.random_filler = a->random_filler;
      spec.mqar.hide_answers = a->hide_answers;
      const std::string path = a->out + (split == 0 ? "/train.h5" : "/val.h5");
      eval::write_token_dataset(path, vocab, eval::demo_documents(vocab, spec));
      std::printf("wrote %s (%lld grammar + %lld MQAR documents, vocabulary %lld)\n", path.c_str(),
                  static_cast<long long>(spec.grammar_docs), static_cast<long long>(spec.mqar_docs),
                  static_cast<long long>(vocab.size()));
    }
  });
}

}  // namespace lizard::cli
