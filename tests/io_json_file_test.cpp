// Tests of read_json_file: values parsed, and errors naming the file and the byte at fault.
#include <gtest/gtest.h>

#include "fixtures/io/io_writers.h"
#include "io/json_file.h"
#include "kiln/error.h"

namespace {

using kiln_test::TempDir;
using kiln_test::write_file;

std::string error_of(const std::string& path) {
  try {
    kiln::io::read_json_file(path);
  } catch (const kiln::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(JsonFile, ParsesValues) {
  TempDir dir("json");
  write_file(dir.file("c.json"), R"({"hidden_size": 64, "name": "tiny", "eps": 1e-5, "list": [1, 2]})");
  const auto j = kiln::io::read_json_file(dir.file("c.json"));
  EXPECT_EQ(j.at("hidden_size").get<int>(), 64);
  EXPECT_EQ(j.at("name").get<std::string>(), "tiny");
  EXPECT_DOUBLE_EQ(j.at("eps").get<double>(), 1e-5);
  EXPECT_EQ(j.at("list").size(), 2u);
}

TEST(JsonFile, Errors) {
  TempDir dir("json_err");
  const std::string missing = dir.file("missing.json");
  EXPECT_EQ(error_of(missing).rfind(missing + ": cannot open", 0), 0u) << error_of(missing);

  const std::string bad = dir.file("bad.json");
  write_file(bad, "{\"a\": 1,\n \"b\": ]}");
  const std::string e = error_of(bad);
  EXPECT_EQ(e.rfind(bad + ": invalid JSON at byte 15: ", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;

  const std::string empty = dir.file("empty.json");
  write_file(empty, "");
  EXPECT_EQ(error_of(empty).rfind(empty + ": invalid JSON at byte 0", 0), 0u) << error_of(empty);

  EXPECT_EQ(error_of(dir.path().string()).rfind(dir.path().string() + ": ", 0), 0u);
}

}  // namespace
