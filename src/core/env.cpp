#include "core/env.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace kiln {

long env_integer(const char* name, long fallback, const std::function<bool(long)>& valid, const char* expected) {
  const char* e = std::getenv(name);
  if (!e || !*e) return fallback;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(e, &end, 10);
  if (*end != '\0' || errno == ERANGE || !valid(v)) {
    std::fprintf(stderr, "kiln: %s=%s is not %s; using %ld\n", name, e, expected, fallback);
    return fallback;
  }
  return v;
}

}  // namespace kiln
