// Training metrics: a JSONL file (one object per logged step / validation) and the terminal
// view (a progress bar redrawn in place on a TTY, plain lines otherwise, so logs stay greppable).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace lizard::train {

/// One step as the user sees it.
struct StepMetrics {
  int64_t step = 0;   ///< 1-based optimizer step just finished
  int64_t total = 0;  ///< steps of the run
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double mfu = 0;           ///< model FLOPs utilisation in [0, 1]; 0 = unknown
  double memory_gib = 0;    ///< peak device memory; 0 = unknown (CPU)
  double elapsed_s = 0;     ///< since the start of this process's run
  int64_t first_step = 0;   ///< step this process started from (a resume), for the ETA
  bool skipped = false;     ///< non-finite gradients: the update was skipped
};

/// Ordered key/value pairs of one JSON object.
using JsonFields = std::vector<std::pair<std::string, double>>;

/// `{"kind": "...", "k": v, ...}` (non-finite values as null, integers without a fraction).
std::string json_line(const std::string& kind, const JsonFields& fields);

/// Appends JSON lines to a file (created with its directory; appending keeps a resumed run's
/// history in one file). Empty path: writes nothing.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  void write(const std::string& kind, const JsonFields& fields);

 private:
  std::FILE* f_ = nullptr;
};

/// The standard fields of a step for the JSONL file.
JsonFields step_fields(const StepMetrics& m);

/// "1h02m", "3m12s", "12s".
std::string format_duration(double seconds);

/// One progress line: bar (TTY only), step/total, loss, LR, grad norm, tokens/s, MFU, ETA, memory.
std::string format_progress(const StepMetrics& m, bool tty, int bar_width = 20);

/// Writes progress to a stream: on a TTY the line is redrawn in place (\r) and finished
/// with a newline by `message` or at the end; otherwise one line per call.
class ProgressPrinter {
 public:
  /// `tty` < 0: detect from the stream.
  explicit ProgressPrinter(std::FILE* out = stdout, int tty = -1);
  void step(const StepMetrics& m);
  /// A line that must stay (validation, checkpoint saved, warnings).
  void message(const std::string& line);
  void finish();

 private:
  std::FILE* out_;
  bool tty_;
  bool open_line_ = false;
};

/// Peak dense bf16 tensor-core FLOP/s of a GPU by name (H100/H200: 989e12, A100: 312e12),
/// 0 when unknown (MFU is then not reported).
double peak_flops_for(const std::string& device_name);

}  // namespace lizard::train
