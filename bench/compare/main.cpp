// kiln-bench-compare BASE.json NEW.json [--threshold 5%] [--alpha 0.05] [--md FILE] [--svg FILE]
// Exit status: 0 no significant regression, 1 significant regression, 2 usage or input error.
// See bench/compare/compare.h and docs/perf-testing.md.
#include <iostream>
#include <string>
#include <vector>

#include "bench/compare/compare.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return kiln::bench::run_cli(args, std::cout, std::cerr);
}
