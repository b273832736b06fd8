// kiln::Error and the check macros used at every API boundary.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kiln {

// The one exception type kiln throws. Messages name the file, field or limit at fault; the CLI prints
// them as one line on stderr and exits with code 2.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A fault the device cannot recover from (a CUDA error that poisons the context: an illegal address, a launch
// failure, an uncorrectable ECC error). Whatever ran on the device is lost; the engine that sees it is dead.
class DeviceFault : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace kiln

// Throws kiln::Error with a formatted message (fmt syntax).
#define KILN_THROW(...) throw ::kiln::Error(::fmt::format(__VA_ARGS__))

// Checks a condition that depends on input (files, flags, requests); throws kiln::Error when false.
#define KILN_CHECK(cond, ...)      \
  do {                             \
    if (!(cond)) [[unlikely]] {    \
      KILN_THROW(__VA_ARGS__);     \
    }                              \
  } while (0)

// Checks an internal invariant; a failure is a bug in kiln, reported with file:line.
#define KILN_ASSERT(cond)                                                                      \
  do {                                                                                         \
    if (!(cond)) [[unlikely]] {                                                                \
      ::kiln::detail::throw_error(__FILE__, __LINE__, "internal check failed: " #cond);        \
    }                                                                                          \
  } while (0)
