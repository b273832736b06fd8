// Integer settings from the environment: unset or empty gives the default; a whole integer that the check
// accepts is taken; anything else (trailing text, out of range, refused) falls back to the default.
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/env.h"

namespace kiln {
namespace {

constexpr const char* kName = "KILN_ENV_TEST_VALUE";
long read() {
  return env_integer(kName, 7, [](long v) { return v >= 1 && v <= 100; }, "an integer in [1, 100]");
}

TEST(Env, IntegerSettings) {
  unsetenv(kName);
  EXPECT_EQ(read(), 7) << "unset";
  setenv(kName, "", 1);
  EXPECT_EQ(read(), 7) << "empty";
  setenv(kName, "42", 1);
  EXPECT_EQ(read(), 42);
  setenv(kName, "-3", 1);
  EXPECT_EQ(read(), 7) << "refused by the check";
  setenv(kName, "12abc", 1);
  EXPECT_EQ(read(), 7) << "trailing text";
  setenv(kName, "99999999999999999999999", 1);
  EXPECT_EQ(read(), 7) << "out of long's range";
  setenv(kName, "0x10", 1);
  EXPECT_EQ(read(), 7) << "decimal only";
  unsetenv(kName);
}

}  // namespace
}  // namespace kiln
