// Out-of-line pieces of kiln::Error.
#include "kiln/error.h"

namespace kiln::detail {

void throw_error(const char* file, int line, const std::string& message) {
  throw Error(fmt::format("{} ({}:{})", message, file, line));
}

}  // namespace kiln::detail
