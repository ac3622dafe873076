// A small JSON document model: enough for config.json, tokenizer.json (10+ MB) and safetensors
// headers without a third-party dependency (the GPU machine may not have nlohmann).
//
// Numbers: an integer literal (no '.', no exponent) that fits int64 is an Int; anything else is a
// Double. Objects keep insertion order (so a re-serialised config reads like the original).
// Strings hold UTF-8; \uXXXX escapes (surrogate pairs included) are decoded on parse.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace lizard::io {

class Json {
 public:
  enum class Type : uint8_t { Null, Bool, Int, Double, String, Array, Object };

  Json() = default;  ///< null
  Json(std::nullptr_t) {}
  Json(bool b) : type_(Type::Bool), b_(b) {}
  Json(int v) : type_(Type::Int), i_(v) {}
  Json(int64_t v) : type_(Type::Int), i_(v) {}
  Json(long long v) : type_(Type::Int), i_(static_cast<int64_t>(v)) {}
  /// Sizes and counts; must fit int64.
  Json(uint64_t v) : type_(Type::Int), i_(static_cast<int64_t>(v)) {}
  Json(double v) : type_(Type::Double), d_(v) {}
  Json(const char* s) : type_(Type::String), s_(s) {}
  Json(std::string s) : type_(Type::String), s_(std::move(s)) {}

  static Json array() {
    Json j;
    j.type_ = Type::Array;
    return j;
  }
  static Json array(std::initializer_list<Json> items) {
    Json j = array();
    j.vals_.assign(items.begin(), items.end());
    return j;
  }
  static Json object() {
    Json j;
    j.type_ = Type::Object;
    return j;
  }

  Type type() const { return type_; }
  /// "null", "bool", "integer", "number", "string", "array", "object".
  const char* type_name() const;
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_int() const { return type_ == Type::Int; }
  /// Int or Double.
  bool is_number() const { return type_ == Type::Int || type_ == Type::Double; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  // Typed access: each throws InputError ("expected <type>, got <type>") on a mismatch.
  bool as_bool() const;
  /// An Int, or a Double with an exact integral value.
  int64_t as_int() const;
  /// Int or Double, as double.
  double as_double() const;
  const std::string& as_string() const;

  /// Elements of an array or members of an object.
  size_t size() const;
  /// Array element i (throws when out of range or not an array).
  const Json& operator[](size_t i) const;
  Json& operator[](size_t i);
  /// The elements of an array.
  const std::vector<Json>& items() const;

  /// The member `key` of an object, or nullptr when absent (linear in the member count).
  const Json* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  /// The member `key`; throws InputError naming the key when absent.
  const Json& at(const std::string& key) const;
  /// Member names of an object, in insertion order; values() is parallel to it.
  const std::vector<std::string>& keys() const;
  const std::vector<Json>& values() const;

  /// Appends to an array (a null becomes an empty array first).
  Json& push_back(Json v);
  /// Sets object member `key` (replaces an existing one in place; a null becomes an object).
  Json& set(const std::string& key, Json v);

  /// Serialises. indent < 0: compact; otherwise pretty with that many spaces per level.
  /// Doubles use the shortest text that parses back to the same value; NaN/Inf throw.
  std::string dump(int indent = -1) const;

  /// Deep equality (Int 1 and Double 1.0 differ).
  bool operator==(const Json& o) const;
  bool operator!=(const Json& o) const { return !(*this == o); }

 private:
  Type type_ = Type::Null;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<std::string> keys_;  // object member names (parallel to vals_)
  std::vector<Json> vals_;         // array elements or object member values

  friend class JsonParser;
};

/// Parses a complete JSON text. Errors are InputError "<source>: JSON error at line L, column C:
/// <what was expected>". `source` names the text in messages (a file path, "config").
Json parse_json(const std::string& text, const std::string& source = "<string>");
/// Reads and parses a file; a missing or unreadable file is an InputError naming it.
Json load_json_file(const std::string& path);
/// Reads a whole file into a string (InputError naming the file if it cannot be read).
std::string read_text_file(const std::string& path);

}  // namespace lizard::io
