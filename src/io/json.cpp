#include "lizard/io/json.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "lizard/core/error.h"
#include "lizard/io/unicode.h"

namespace lizard::io {

const char* Json::type_name() const {
  switch (type_) {
    case Type::Null: return "null";
    case Type::Bool: return "bool";
    case Type::Int: return "integer";
    case Type::Double: return "number";
    case Type::String: return "string";
    case Type::Array: return "array";
    case Type::Object: return "object";
  }
  return "?";
}

bool Json::as_bool() const {
  LZ_INPUT_CHECK(type_ == Type::Bool, "JSON: expected a bool, got ", type_name());
  return b_;
}

int64_t Json::as_int() const {
  if (type_ == Type::Int) return i_;
  // Some writers emit 4096.0 for integral fields; accept exact integral doubles.
  LZ_INPUT_CHECK(type_ == Type::Double && std::nearbyint(d_) == d_ && std::abs(d_) < 9.2e18,
                 "JSON: expected an integer, got ", type_ == Type::Double ? dump() : type_name());
  return static_cast<int64_t>(d_);
}

double Json::as_double() const {
  if (type_ == Type::Int) return static_cast<double>(i_);
  LZ_INPUT_CHECK(type_ == Type::Double, "JSON: expected a number, got ", type_name());
  return d_;
}

const std::string& Json::as_string() const {
  LZ_INPUT_CHECK(type_ == Type::String, "JSON: expected a string, got ", type_name());
  return s_;
}

size_t Json::size() const {
  LZ_INPUT_CHECK(type_ == Type::Array || type_ == Type::Object,
                 "JSON: size() of a ", type_name(), " (expected an array or object)");
  return vals_.size();
}

const Json& Json::operator[](size_t i) const {
  LZ_INPUT_CHECK(type_ == Type::Array, "JSON: expected an array, got ", type_name());
  LZ_INPUT_CHECK(i < vals_.size(), "JSON: index ", i, " out of range for an array of ",
                 vals_.size());
  return vals_[i];
}

Json& Json::operator[](size_t i) {
  return const_cast<Json&>(static_cast<const Json&>(*this)[i]);
}

const std::vector<Json>& Json::items() const {
  LZ_INPUT_CHECK(type_ == Type::Array, "JSON: expected an array, got ", type_name());
  return vals_;
}

const Json* Json::find(const std::string& key) const {
  if (type_ != Type::Object) return nullptr;
  // From the back, so that with duplicate keys the last one wins (as in Python's json).
  for (size_t i = keys_.size(); i-- > 0;)
    if (keys_[i] == key) return &vals_[i];
  return nullptr;
}

const Json& Json::at(const std::string& key) const {
  LZ_INPUT_CHECK(type_ == Type::Object, "JSON: expected an object with key \"", key, "\", got ",
                 type_name());
  const Json* v = find(key);
  LZ_INPUT_CHECK(v != nullptr, "JSON: missing key \"", key, "\"");
  return *v;
}

const std::vector<std::string>& Json::keys() const {
  LZ_INPUT_CHECK(type_ == Type::Object, "JSON: expected an object, got ", type_name());
  return keys_;
}

const std::vector<Json>& Json::values() const {
  LZ_INPUT_CHECK(type_ == Type::Object, "JSON: expected an object, got ", type_name());
  return vals_;
}

Json& Json::push_back(Json v) {
  if (type_ == Type::Null) type_ = Type::Array;
  LZ_INPUT_CHECK(type_ == Type::Array, "JSON: push_back on a ", type_name());
  vals_.push_back(std::move(v));
  return vals_.back();
}

Json& Json::set(const std::string& key, Json v) {
  if (type_ == Type::Null) type_ = Type::Object;
  LZ_INPUT_CHECK(type_ == Type::Object, "JSON: set(\"", key, "\") on a ", type_name());
  for (size_t i = 0; i < keys_.size(); ++i)
    if (keys_[i] == key) return vals_[i] = std::move(v);
  keys_.push_back(key);
  vals_.push_back(std::move(v));
  return vals_.back();
}

bool Json::operator==(const Json& o) const {
  if (type_ != o.type_) return false;
  switch (type_) {
    case Type::Null: return true;
    case Type::Bool: return b_ == o.b_;
    case Type::Int: return i_ == o.i_;
    case Type::Double: return d_ == o.d_;
    case Type::String: return s_ == o.s_;
    case Type::Array: return vals_ == o.vals_;
    case Type::Object: return keys_ == o.keys_ && vals_ == o.vals_;
  }
  return false;
}

// ---------------------------------------------------------------- serialisation

namespace {

void dump_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through unescaped
        }
    }
  }
  out += '"';
}

void dump_double(double d, std::string& out) {
  LZ_INPUT_CHECK(std::isfinite(d), "JSON: cannot serialise the non-finite number ", d);
  char buf[40];
  // Shortest precision that parses back to the same double.
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string t = buf;
  // Keep it a Double on re-parse: "1" would come back as an integer.
  if (t.find_first_of(".eE") == std::string::npos) t += ".0";
  out += t;
}

void dump_value(const Json& j, std::string& out, int indent, int level) {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * lvl), ' ');
  };
  switch (j.type()) {
    case Json::Type::Null: out += "null"; break;
    case Json::Type::Bool: out += j.as_bool() ? "true" : "false"; break;
    case Json::Type::Int: out += std::to_string(j.as_int()); break;
    case Json::Type::Double: dump_double(j.as_double(), out); break;
    case Json::Type::String: dump_string(j.as_string(), out); break;
    case Json::Type::Array: {
      const auto& v = j.items();
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        dump_value(v[i], out, indent, level + 1);
      }
      if (!v.empty()) newline(level);
      out += ']';
      break;
    }
    case Json::Type::Object: {
      const auto& k = j.keys();
      const auto& v = j.values();
      out += '{';
      for (size_t i = 0; i < k.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        dump_string(k[i], out);
        out += indent < 0 ? ":" : ": ";
        dump_value(v[i], out, indent, level + 1);
      }
      if (!k.empty()) newline(level);
      out += '}';
      break;
    }
  }
}

}  // namespace

std::string Json::dump(int indent) const {
  std::string out;
  dump_value(*this, out, indent, 0);
  return out;
}

// ---------------------------------------------------------------- parsing

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& source) : t_(text), src_(source) {}

  Json parse_document() {
    skip_ws();
    Json v = parse_value(0);
    skip_ws();
    if (p_ != t_.size()) fail("expected end of input after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 512;  // deeper nesting is hostile input, not a config

  [[noreturn]] void fail(const std::string& what) const {
    // Line and column (1-based, column in bytes) of the current position.
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p_ && i < t_.size(); ++i) {
      if (t_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw InputError(str_cat(src_, ": JSON error at line ", line, ", column ", col, ": ", what));
  }

  void skip_ws() {
    while (p_ < t_.size()) {
      char c = t_[p_];
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') ++p_;
      else break;
    }
  }

  std::string near() const {
    if (p_ >= t_.size()) return "end of input";
    return str_cat("'", t_[p_], "'");
  }

  Json parse_value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than 512 levels");
    if (p_ >= t_.size()) fail("expected a value, got end of input");
    char c = t_[p_];
    switch (c) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"': {
        Json j;
        j.type_ = Json::Type::String;
        parse_string(j.s_);
        return j;
      }
      case 't': expect_word("true"); return Json(true);
      case 'f': expect_word("false"); return Json(false);
      case 'n': expect_word("null"); return Json();
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        fail(str_cat("expected a value, got ", near()));
    }
  }

  void expect_word(const char* w) {
    size_t n = std::strlen(w);
    if (t_.compare(p_, n, w) != 0) fail(str_cat("expected '", w, "'"));
    p_ += n;
  }

  Json parse_number() {
    const size_t start = p_;
    bool integral = true;
    if (t_[p_] == '-') ++p_;
    if (p_ >= t_.size() || !isdigit(t_[p_])) fail("expected a digit in a number");
    if (t_[p_] == '0' && p_ + 1 < t_.size() && isdigit(t_[p_ + 1]))
      fail("leading zeros are not allowed in a number");
    while (p_ < t_.size() && isdigit(t_[p_])) ++p_;
    if (p_ < t_.size() && t_[p_] == '.') {
      integral = false;
      ++p_;
      if (p_ >= t_.size() || !isdigit(t_[p_])) fail("expected a digit after '.'");
      while (p_ < t_.size() && isdigit(t_[p_])) ++p_;
    }
    if (p_ < t_.size() && (t_[p_] == 'e' || t_[p_] == 'E')) {
      integral = false;
      ++p_;
      if (p_ < t_.size() && (t_[p_] == '+' || t_[p_] == '-')) ++p_;
      if (p_ >= t_.size() || !isdigit(t_[p_])) fail("expected a digit in the exponent");
      while (p_ < t_.size() && isdigit(t_[p_])) ++p_;
    }
    const std::string lit = t_.substr(start, p_ - start);
    if (integral) {
      errno = 0;
      char* end = nullptr;
      long long v = std::strtoll(lit.c_str(), &end, 10);
      if (errno == 0) return Json(static_cast<int64_t>(v));
      // Too large for int64: keep it as a double rather than failing.
    }
    return Json(std::strtod(lit.c_str(), nullptr));
  }

  static bool isdigit(char c) { return c >= '0' && c <= '9'; }

  uint32_t parse_hex4() {
    if (p_ + 4 > t_.size()) fail("expected 4 hex digits after \\u");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = t_[p_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else {
        --p_;
        fail("expected a hex digit in a \\u escape");
      }
    }
    return v;
  }



  void parse_string(std::string& out) {
    ++p_;  // opening quote
    while (true) {
      // Copy the run of plain bytes in one go: tokenizer.json is mostly such runs.
      size_t q = p_;
      while (q < t_.size() && t_[q] != '"' && t_[q] != '\\' &&
             static_cast<unsigned char>(t_[q]) >= 0x20)
        ++q;
      out.append(t_, p_, q - p_);
      p_ = q;
      if (p_ >= t_.size()) fail("unterminated string");
      char c = t_[p_];
      if (c == '"') {
        ++p_;
        return;
      }
      if (c != '\\') fail("control character in a string (must be escaped)");
      ++p_;
      if (p_ >= t_.size()) fail("unterminated escape in a string");
      char e = t_[p_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate.
            if (p_ + 2 > t_.size() || t_[p_] != '\\' || t_[p_ + 1] != 'u')
              fail("high surrogate \\u escape not followed by a low surrogate");
            p_ += 2;
            uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("invalid low surrogate in a \\u escape pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("lone low surrogate in a \\u escape");
          }
          utf8_append(cp, out);
          break;
        }
        default:
          --p_;
          fail(str_cat("invalid escape '\\", e, "' in a string"));
      }
    }
  }

  Json parse_array(int depth) {
    ++p_;
    Json j = Json::array();
    skip_ws();
    if (p_ < t_.size() && t_[p_] == ']') {
      ++p_;
      return j;
    }
    while (true) {
      skip_ws();
      j.vals_.push_back(parse_value(depth + 1));
      skip_ws();
      if (p_ >= t_.size()) fail("unterminated array (expected ',' or ']')");
      if (t_[p_] == ',') {
        ++p_;
        continue;
      }
      if (t_[p_] == ']') {
        ++p_;
        return j;
      }
      fail(str_cat("expected ',' or ']' in an array, got ", near()));
    }
  }

  Json parse_object(int depth) {
    ++p_;
    Json j = Json::object();
    skip_ws();
    if (p_ < t_.size() && t_[p_] == '}') {
      ++p_;
      return j;
    }
    while (true) {
      skip_ws();
      if (p_ >= t_.size() || t_[p_] != '"') fail(str_cat("expected a string key, got ", near()));
      std::string key;
      parse_string(key);
      skip_ws();
      if (p_ >= t_.size() || t_[p_] != ':') fail(str_cat("expected ':' after a key, got ", near()));
      ++p_;
      skip_ws();
      // No duplicate check here (it would make a 128k-entry vocab quadratic); find() searches
      // from the back so the last duplicate wins.
      j.keys_.push_back(std::move(key));
      j.vals_.push_back(parse_value(depth + 1));
      skip_ws();
      if (p_ >= t_.size()) fail("unterminated object (expected ',' or '}')");
      if (t_[p_] == ',') {
        ++p_;
        continue;
      }
      if (t_[p_] == '}') {
        ++p_;
        return j;
      }
      fail(str_cat("expected ',' or '}' in an object, got ", near()));
    }
  }

  const std::string& t_;
  const std::string& src_;
  size_t p_ = 0;
};

Json parse_json(const std::string& text, const std::string& source) {
  return JsonParser(text, source).parse_document();
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LZ_INPUT_CHECK(f.good(), path, ": cannot open the file (missing or unreadable)");
  std::ostringstream ss;
  ss << f.rdbuf();
  LZ_INPUT_CHECK(!f.bad(), path, ": read error");
  return ss.str();
}

Json load_json_file(const std::string& path) { return parse_json(read_text_file(path), path); }

}  // namespace lizard::io
