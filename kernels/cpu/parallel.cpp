#include "kernels/cpu/parallel.h"

#include <omp.h>

#include "core/error.h"
#include "core/ops.h"

namespace kiln {
namespace cpu {
int max_threads() { return omp_get_max_threads(); }
bool in_parallel_region() { return omp_in_parallel() != 0; }
}  // namespace cpu

void set_num_threads(int n) {
  KILN_CHECK(n >= 1, "[set_num_threads] number of threads must be >= 1, got ", n);
  omp_set_num_threads(n);  // oneDNN uses the same OpenMP runtime, so this governs it too
}
int get_num_threads() { return omp_get_max_threads(); }

}  // namespace kiln
