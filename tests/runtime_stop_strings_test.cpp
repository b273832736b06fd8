// StopStringFilter: stops found across pieces, never emitted, held-back text released when it cannot start
// a stop, the earliest of several stops winning.
#include <gtest/gtest.h>

#include "runtime/stop_strings.h"

namespace kiln {
namespace {

TEST(StopStrings, FoundAcrossPiecesAndNeverEmitted) {
  StopStringFilter f({"END"});
  EXPECT_EQ(f.push("hello E"), "hello ");  // "E" could start the stop: held
  EXPECT_EQ(f.push("N"), "");
  EXPECT_EQ(f.push("Dgame"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.push("more"), "");
  EXPECT_EQ(f.flush(), "");
}

TEST(StopStrings, HeldTextIsReleasedWhenItCannotStartAStop) {
  StopStringFilter f({"END"});
  EXPECT_EQ(f.push("xEN"), "x");
  EXPECT_EQ(f.push("o"), "ENo");
  EXPECT_FALSE(f.stopped());
  EXPECT_EQ(f.push("E"), "");
  EXPECT_EQ(f.flush(), "E");  // generation ended without the stop: the held text is shown
}

TEST(StopStrings, EarliestOfSeveralWinsAndPartialOverlapsWork) {
  StopStringFilter f({"bc", "abcd", "zz"});
  EXPECT_EQ(f.push("xa"), "x");
  EXPECT_EQ(f.push("bcd"), "");  // "abcd" starts first (at the held "a"), though "bc" completes too
  EXPECT_TRUE(f.stopped());
  StopStringFilter h({"cd", "bcx"});
  EXPECT_EQ(h.push("abcd"), "ab");  // only "cd" matches
  EXPECT_TRUE(h.stopped());
  StopStringFilter g({"aab"});
  EXPECT_EQ(g.push("aa"), "");
  EXPECT_EQ(g.push("a"), "a");  // "aaa": the last two may still start "aab"
  EXPECT_EQ(g.push("b"), "");
  EXPECT_TRUE(g.stopped());
}

TEST(StopStrings, NoStopsPassesEverythingThrough) {
  StopStringFilter f({});
  EXPECT_EQ(f.push("abc"), "abc");
  EXPECT_EQ(f.flush(), "");
  StopStringFilter e({""});  // empty stops are ignored
  EXPECT_EQ(e.push("abc"), "abc");
}

TEST(StopStrings, MultiByteTextIsHeldWhole) {
  StopStringFilter f({"\xC3\xA9t\xC3\xA9"});  // "été"
  EXPECT_EQ(f.push("caf\xC3\xA9"), "caf");
  EXPECT_EQ(f.push("s"), "\xC3\xA9s");
  EXPECT_EQ(f.push("\xC3\xA9t\xC3\xA9!"), "");
  EXPECT_TRUE(f.stopped());
}

}  // namespace
}  // namespace kiln
