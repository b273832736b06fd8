// Integer settings read from the environment (KILN_GEMM_TUNE_MIN_ROWS, KILN_PREFILL_WGMMA, ...): a malformed or
// refused value falls back to the default with a one-line warning instead of being half-parsed.
#pragma once

#include <functional>

namespace kiln {

// The value of environment variable `name` when it holds a whole decimal integer that `valid` accepts;
// `fallback` when it is unset or empty, and also when it holds anything else, then after a warning on stderr
// ("kiln: NAME=VALUE is not EXPECTED; using FALLBACK").
long env_integer(const char* name, long fallback, const std::function<bool(long)>& valid, const char* expected);

}  // namespace kiln
