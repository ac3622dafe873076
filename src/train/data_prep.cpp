// Raw data readers and document tokenization (see include/lizard/train/data_prep.h).
#include "lizard/train/data_prep.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "lizard/core/error.h"
#include "lizard/io/json.h"

namespace lizard::train {

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

/// Parses a JSON list file or a JSONL file into records, each with its name for errors.
std::vector<std::pair<io::Json, std::string>> read_records(const std::string& path) {
  const std::string text = io::read_text_file(path);
  std::vector<std::pair<io::Json, std::string>> out;
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    io::Json all = io::parse_json(text, path);
    for (size_t i = 0; i < all.size(); ++i) out.emplace_back(all[i], str_cat(path, " record ", i));
    return out;
  }
  std::istringstream in(text);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = str_cat(path, " line ", n);
    out.emplace_back(io::parse_json(line, where), where);
  }
  return out;
}

const std::string& string_member(const io::Json& rec, const char* key, const std::string& where,
                                 bool required) {
  static const std::string empty;
  LZ_INPUT_CHECK(rec.is_object(), where, ": expected a JSON object, got ", rec.type_name());
  const io::Json* v = rec.find(key);
  if (!v || v->is_null()) {
    LZ_INPUT_CHECK(!required, where, ": missing \"", key, "\"");
    return empty;
  }
  LZ_INPUT_CHECK(v->is_string(), where, ": \"", key, "\" must be a string, got ", v->type_name());
  return v->as_string();
}

}  // namespace

std::vector<RawDocument> read_alpaca(const std::string& path, const AlpacaTemplate& tmpl) {
  std::vector<RawDocument> docs;
  for (const auto& [rec, where] : read_records(path)) {
    const std::string& instruction = string_member(rec, "instruction", where, true);
    const std::string& input = string_member(rec, "input", where, false);
    const std::string& output = string_member(rec, "output", where, true);
    std::string prompt = replace_all(input.empty() ? tmpl.no_input : tmpl.with_input,
                                     "{instruction}", instruction);
    prompt = replace_all(prompt, "{input}", input);
    docs.push_back({prompt, output});
  }
  return docs;
}

std::vector<RawDocument> read_text(const std::string& path, bool one_per_line) {
  const std::string text = io::read_text_file(path);
  std::vector<RawDocument> docs;
  std::istringstream in(text);
  std::string line, cur;
  auto flush = [&] {
    if (cur.find_first_not_of(" \t\r\n") != std::string::npos) docs.push_back({"", cur});
    cur.clear();
  };
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (one_per_line) {
      cur = line;
      flush();
    } else if (line.find_first_not_of(" \t") == std::string::npos) {
      flush();
    } else {
      cur += cur.empty() ? line : "\n" + line;
    }
  }
  flush();
  return docs;
}

std::vector<RawDocument> read_jsonl_text(const std::string& path) {
  std::vector<RawDocument> docs;
  for (const auto& [rec, where] : read_records(path)) {
    const std::string& t = string_member(rec, "text", where, true);
    if (!t.empty()) docs.push_back({"", t});
  }
  return docs;
}

TokenizedDocument tokenize_document(const RawDocument& doc, const Encoder& encode, int32_t eos_id,
                                    int64_t max_tokens) {
  TokenizedDocument out;
  if (!doc.prompt.empty()) {
    out.tokens = encode(doc.prompt, true);
    out.mask.assign(out.tokens.size(), 0);
  }
  // The response carries BOS only when it starts the document (plain text).
  std::vector<int32_t> resp = encode(doc.response, doc.prompt.empty());
  if (eos_id >= 0) resp.push_back(eos_id);
  out.tokens.insert(out.tokens.end(), resp.begin(), resp.end());
  out.mask.insert(out.mask.end(), resp.size(), 1);
  if (max_tokens > 0 && static_cast<int64_t>(out.tokens.size()) > max_tokens) {
    out.tokens.resize(max_tokens);
    out.mask.resize(max_tokens);
  }
  return out;
}

std::string file_hash(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LZ_INPUT_CHECK(f.good(), "cannot read ", path);
  uint64_t h = 1469598103934665603ull;
  char buf[1 << 16];
  while (f.read(buf, sizeof(buf)) || f.gcount() > 0) {
    for (std::streamsize i = 0; i < f.gcount(); ++i) {
      h ^= static_cast<unsigned char>(buf[i]);
      h *= 1099511628211ull;
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

}  // namespace lizard::train
