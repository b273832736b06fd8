// StopStringFilter: finds stop strings in streamed text, across token boundaries, and never lets one out:
// text that could be the start of a stop string is held back until it is known not to be.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);

  // Adds a piece of text; returns what is now safe to show. Once a stop string completes, returns the
  // text before it, stopped() becomes true, and everything after is dropped.
  std::string push(std::string_view piece);
  // At the end of generation: the text still held back (nothing after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace kiln
