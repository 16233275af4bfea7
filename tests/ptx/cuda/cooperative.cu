// A cooperative kernel: the grid synchronises through the cooperative launch's workspace.
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

extern "C" __global__ void cooperative_grid_sum(float* x, float* out, int n) {
  cg::grid_group grid = cg::this_grid();
  const unsigned long long i = grid.thread_rank();
  if (i < n) x[i] *= 2.0f;
  grid.sync();
  if (i == 0) {
    float sum = 0;
    for (int j = 0; j < n; ++j) sum += x[j];
    *out = sum;
  }
}
