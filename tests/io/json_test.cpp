#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "io_test_util.h"
#include "lizard/core/error.h"
#include "lizard/io/json.h"

using namespace lizard;
using namespace lizard::io;
using lizard::test::error_of;

TEST(Json, ParsesEveryType) {
  Json j = parse_json(R"( {"n": null, "t": true, "f": false, "i": -42, "big": 9223372036854775807,
      "huge": 92233720368547758070, "d": 1.5e-3, "z": -0.0, "s": "a\"b\\c\/\n\t",
      "arr": [1, [2, []], {}], "o": {"x": 1}} )");
  EXPECT_TRUE(j.at("n").is_null());
  EXPECT_TRUE(j.at("t").as_bool());
  EXPECT_FALSE(j.at("f").as_bool());
  EXPECT_TRUE(j.at("i").is_int());
  EXPECT_EQ(j.at("i").as_int(), -42);
  EXPECT_EQ(j.at("big").as_int(), INT64_MAX);
  // Past int64: kept as a double, not an error.
  EXPECT_EQ(j.at("huge").type(), Json::Type::Double);
  EXPECT_DOUBLE_EQ(j.at("huge").as_double(), 9.2233720368547758e19);
  EXPECT_EQ(j.at("d").type(), Json::Type::Double);
  EXPECT_EQ(j.at("d").as_double(), 1.5e-3);
  EXPECT_TRUE(std::signbit(j.at("z").as_double()));
  EXPECT_EQ(j.at("s").as_string(), "a\"b\\c/\n\t");
  EXPECT_EQ(j.at("arr").size(), 3u);
  EXPECT_EQ(j.at("arr")[1][1].size(), 0u);
  EXPECT_EQ(j.at("o").at("x").as_int(), 1);
  EXPECT_EQ(j.find("absent"), nullptr);
}

TEST(Json, UnicodeEscapesIncludingSurrogatePairs) {
  Json j = parse_json(R"(["\u00e9", "\u20ac", "\ud83d\ude00", "\u0000x", "é直接"])");
  EXPECT_EQ(j[0].as_string(), "\xC3\xA9");
  EXPECT_EQ(j[1].as_string(), "\xE2\x82\xAC");
  EXPECT_EQ(j[2].as_string(), "\xF0\x9F\x98\x80");  // U+1F600 from a surrogate pair
  EXPECT_EQ(j[3].as_string(), std::string("\0x", 2));
  EXPECT_EQ(j[4].as_string(), "é直接");
  EXPECT_THROW(parse_json(R"(["\ud83d"])"), InputError);        // lone high surrogate
  EXPECT_THROW(parse_json(R"(["\ude00"])"), InputError);        // lone low surrogate
  EXPECT_THROW(parse_json(R"(["\ud83d\u0041"])"), InputError);  // high + non-low
}

TEST(Json, ObjectsKeepInsertionOrderAndRoundTrip) {
  const std::string text =
      R"({"z":1,"a":[true,null,"x\u0001y"],"m":{"k":-3.25,"e":1e+300,"w":2.0},"t":0.1})";
  Json j = parse_json(text);
  ASSERT_EQ(j.keys().size(), 4u);
  EXPECT_EQ(j.keys()[0], "z");
  EXPECT_EQ(j.keys()[1], "a");
  // Compact dump is byte-identical except the double spelling; a re-parse is equal.
  const std::string d = j.dump();
  EXPECT_EQ(parse_json(d), j);
  EXPECT_EQ(parse_json(j.dump(2)), j);
  // 2.0 stays a double through a round trip; 0.1 is written in its shortest exact form.
  EXPECT_EQ(parse_json(d).at("m").at("w").type(), Json::Type::Double);
  EXPECT_NE(d.find("\"t\":0.1}"), std::string::npos) << d;
  EXPECT_NE(d.find("\\u0001"), std::string::npos) << d;
}

TEST(Json, DoublesRoundTripExactly) {
  // Random bit patterns through dump/parse must come back identical.
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 2000; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    double d;
    std::memcpy(&d, &x, 8);
    if (!std::isfinite(d)) continue;
    Json j(d);
    Json back = parse_json(j.dump());
    ASSERT_EQ(back.as_double(), d) << j.dump();
  }
  EXPECT_THROW(Json(std::nan("")).dump(), InputError);
}

TEST(Json, BuildersAndSet) {
  Json o = Json::object();
  o.set("b", 1);
  o.set("a", "x");
  o.set("b", 2);  // replaces in place, keeps position
  EXPECT_EQ(o.dump(), R"({"b":2,"a":"x"})");
  Json a;
  a.push_back(1);  // null becomes an array
  a.push_back(Json::array()).push_back(2);  // push_back returns the new element
  EXPECT_EQ(a.dump(), "[1,[2]]");
  EXPECT_THROW(Json(3).push_back(1), InputError);
  EXPECT_EQ(parse_json("[4096.0]")[0].as_int(), 4096);  // integral doubles accepted as ints
  EXPECT_THROW(parse_json("[1.5]")[0].as_int(), InputError);
}

TEST(Json, DuplicateKeysLastWins) {
  EXPECT_EQ(parse_json(R"({"a":1,"a":2})").at("a").as_int(), 2);
}

TEST(Json, ErrorsNameLineAndColumn) {
  struct Case {
    const char* text;
    const char* where;
    const char* what;
  };
  const Case cases[] = {
      {"{\n  \"a\": 1,\n  \"b\" 2\n}", "line 3, column 7", "expected ':'"},
      {"[1, 2", "line 1, column 6", "unterminated array"},
      {"{\"a\": tru}", "line 1, column 7", "expected 'true'"},
      {"[01]", "line 1, column 2", "leading zeros"},
      {"\"abc", "line 1, column 5", "unterminated string"},
      {"[1] x", "line 1, column 5", "end of input"},
      {"{\"a\":1,}", "line 1, column 8", "expected a string key"},
      {"[\"\\q\"]", "line 1, column 4", "invalid escape"},
      {"[\"a\nb\"]", "line 1, column 4", "control character"},
      {"", "line 1, column 1", "expected a value"},
      {"[-]", "line 1, column 3", "expected a digit"},
      {"[1.]", "line 1, column 4", "after '.'"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of<InputError>([&] { parse_json(c.text, "cfg.json"); });
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.where), std::string::npos) << c.text << " -> " << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << c.text << " -> " << msg;
  }
  EXPECT_THROW(parse_json(std::string(600, '[') + std::string(600, ']')), InputError);
  const std::string m = error_of<InputError>([] { parse_json("{}").at("vocab"); });
  EXPECT_NE(m.find("\"vocab\""), std::string::npos) << m;
  EXPECT_NE(error_of<InputError>([] { parse_json("[1]")[0].as_string(); }).find("expected a string"),
            std::string::npos);
  EXPECT_NE(error_of<InputError>([] { load_json_file("/nonexistent/x.json"); }).find("/nonexistent/x.json"),
            std::string::npos);
}

TEST(Json, ParsesTenMegabytesQuickly) {
  // A tokenizer.json-shaped document: a 200k-entry vocab object and 200k merges.
  std::string s = "{\"model\":{\"vocab\":{";
  for (int i = 0; i < 200000; ++i)
    s += (i ? "," : "") + std::string("\"tok\\u0120") + std::to_string(i) + "\":" + std::to_string(i);
  s += "},\"merges\":[";
  for (int i = 0; i < 200000; ++i) s += (i ? "," : "") + std::string("[\"ab") + std::to_string(i) + "\",\"c\"]";
  s += "]}}";
  ASSERT_GT(s.size(), 7u << 20);
  auto t0 = std::chrono::steady_clock::now();
  Json j = parse_json(s);
  const double sec =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(j.at("model").at("vocab").size(), 200000u);
  EXPECT_EQ(j.at("model").at("vocab").values()[199999].as_int(), 199999);
  // Generous bound for a shared, loaded 2-core machine; the point is "no quadratic behaviour".
  EXPECT_LT(sec, 3.0) << s.size() << " bytes in " << sec << " s";
}
