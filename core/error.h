#pragma once
// User errors (kiln::Error via KILN_CHECK) are kept apart from internal bugs
// (KILN_INTERNAL_ASSERT), as Halide does with user_assert / internal_assert.
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};
// A kiln bug (KILN_INTERNAL_ASSERT), kept distinct so the JIT can fall back instead of failing.
class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {

template <class T>
void append_one(std::ostringstream& os, const T& v) {
  if constexpr (requires { v.begin(); v.end(); } && !std::is_convertible_v<T, std::string_view>) {
    os << '[';
    bool first = true;
    for (const auto& e : v) {
      if (!first) os << ", ";
      first = false;
      os << e;
    }
    os << ']';
  } else {
    os << v;
  }
}

template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (append_one(os, args), ...);
  return os.str();
}

[[noreturn]] void throw_error(const std::string& msg);
[[noreturn]] void internal_error(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace detail
}  // namespace kiln

// KILN_CHECK(cond, "[op] message ", values...): raise kiln::Error with the concatenated message.
#define KILN_CHECK(cond, ...)                                              \
  do {                                                                     \
    if (__builtin_expect(!(cond), 0))                                      \
      ::kiln::detail::throw_error(::kiln::detail::str_cat(__VA_ARGS__));   \
  } while (0)

#define KILN_FAIL(...) ::kiln::detail::throw_error(::kiln::detail::str_cat(__VA_ARGS__))

#define KILN_INTERNAL_ASSERT(cond, ...)                                                 \
  do {                                                                                  \
    if (__builtin_expect(!(cond), 0))                                                   \
      ::kiln::detail::internal_error(__FILE__, __LINE__, #cond,                         \
                                     ::kiln::detail::str_cat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
