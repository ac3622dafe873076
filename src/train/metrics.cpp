// Metrics output (see include/lizard/train/metrics.h).
#include "lizard/train/metrics.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "lizard/core/error.h"

namespace lizard::train {

std::string json_line(const std::string& kind, const JsonFields& fields) {
  std::string s = "{\"kind\": \"" + kind + "\"";
  char buf[64];
  for (const auto& [k, v] : fields) {
    if (!std::isfinite(v)) {
      std::snprintf(buf, sizeof(buf), "null");
    } else if (v == std::floor(v) && std::abs(v) < 1e15) {
      std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
    } else {
      std::snprintf(buf, sizeof(buf), "%.9g", v);
    }
    s += ", \"" + k + "\": " + buf;
  }
  return s + "}";
}

MetricsWriter::MetricsWriter(const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  f_ = std::fopen(path.c_str(), "a");
  LZ_INPUT_CHECK(f_ != nullptr, "metrics file ", path, ": cannot open for writing");
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const std::string& kind, const JsonFields& fields) {
  if (!f_) return;
  std::fprintf(f_, "%s\n", json_line(kind, fields).c_str());
  std::fflush(f_);  // a crash keeps every line written so far
}

JsonFields step_fields(const StepMetrics& m) {
  JsonFields f{{"step", double(m.step)},         {"loss", m.loss},
               {"lr", m.lr},                     {"grad_norm", m.grad_norm},
               {"tokens_per_s", m.tokens_per_s}, {"elapsed_s", m.elapsed_s},
               {"skipped", m.skipped ? 1.0 : 0.0}};
  if (m.mfu > 0) f.emplace_back("mfu", m.mfu);
  if (m.memory_gib > 0) f.emplace_back("memory_gib", m.memory_gib);
  return f;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lds", s);
  }
  return buf;
}

std::string format_progress(const StepMetrics& m, bool tty, int bar_width) {
  std::string s;
  if (tty && m.total > 0) {
    const int filled = static_cast<int>(bar_width * std::min<int64_t>(m.step, m.total) / m.total);
    s = "[" + std::string(filled, '#') + std::string(bar_width - filled, '.') + "] ";
  }
  char buf[256];
  const int64_t done = m.step - m.first_step;
  const double eta = done > 0 ? m.elapsed_s / done * (m.total - m.step) : NAN;
  std::snprintf(buf, sizeof(buf), "step %lld/%lld loss %.4f lr %.3g gnorm %.3g tok/s %.4g",
                static_cast<long long>(m.step), static_cast<long long>(m.total), m.loss, m.lr,
                m.grad_norm, m.tokens_per_s);
  s += buf;
  if (m.mfu > 0) {
    std::snprintf(buf, sizeof(buf), " mfu %.1f%%", 100 * m.mfu);
    s += buf;
  }
  s += " eta " + format_duration(eta);
  if (m.memory_gib > 0) {
    std::snprintf(buf, sizeof(buf), " mem %.1fG", m.memory_gib);
    s += buf;
  }
  if (m.skipped) s += " (skipped: non-finite gradients)";
  return s;
}

ProgressPrinter::ProgressPrinter(std::FILE* out, int tty)
    : out_(out), tty_(tty < 0 ? ::isatty(::fileno(out)) != 0 : tty != 0) {}

void ProgressPrinter::step(const StepMetrics& m) {
  if (tty_) {
    // Clear to the end of the line: the new text may be shorter.
    std::fprintf(out_, "\r%s\x1b[K", format_progress(m, true).c_str());
    open_line_ = true;
  } else {
    std::fprintf(out_, "%s\n", format_progress(m, false).c_str());
  }
  std::fflush(out_);
}

void ProgressPrinter::message(const std::string& line) {
  finish();
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

void ProgressPrinter::finish() {
  if (open_line_) std::fprintf(out_, "\n");
  open_line_ = false;
}

double peak_flops_for(const std::string& name) {
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos ||
      name.find("GH200") != std::string::npos)
    return 989e12;
  if (name.find("A100") != std::string::npos) return 312e12;
  if (name.find("L40S") != std::string::npos) return 362e12;
  return 0;
}

}  // namespace lizard::train
