// unime::Error and helpers for reporting bad user input (files, flags, requests, rows).
// Two kinds of failure, two mechanisms (STYLE.md B5): user input raises unime::Error with
// what/where/expected/got and a hint; programmer invariants use TORCH_CHECK (c10::Error).
// This header stays free of torch so that io/, text/ and tools/ compile fast.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace unime {

/// Bad user input: a file, a flag, a request, a data row. The message is one line that names
/// the file (and line, key or tensor) and the problem.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Concatenates its arguments with operator<< (like c10::str, without the torch headers).
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace unime

/// Throws unime::Error(str(args...)) unless cond holds. For user input only.
#define UNIME_CHECK(cond, ...)                              \
  do {                                                      \
    if (!(cond)) throw ::unime::Error(::unime::str(__VA_ARGS__)); \
  } while (0)
