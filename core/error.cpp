#include "core/error.h"

namespace kiln::detail {

void throw_error(const std::string& msg) { throw Error(msg); }

void internal_error(const char* file, int line, const char* cond, const std::string& msg) {
  throw InternalError(str_cat("[internal] kiln bug: ", cond, " failed at ", file, ":", line,
                      msg.empty() ? "" : ": ", msg, " (please report)"));
}

}  // namespace kiln::detail
