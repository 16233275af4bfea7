// Cluster kernels (sm_90): blocks of a cluster synchronise and read each other's shared memory.
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

extern "C" __global__ void __cluster_dims__(2, 1, 1) cluster_exchange(int* out) {
  __shared__ int value;
  cg::cluster_group cluster = cg::this_cluster();
  if (threadIdx.x == 0) value = blockIdx.x;
  cluster.sync();
  const int* peer = cluster.map_shared_rank(&value, cluster.block_rank() ^ 1);
  if (threadIdx.x == 0) out[blockIdx.x] = *peer;
  cluster.sync();
}

// Declares a cluster shape but never talks to its peers: still refused, because a cluster launch
// schedules its blocks together.
extern "C" __global__ void __cluster_dims__(4, 1, 1) cluster_declared_only(float* x) {
  x[blockIdx.x * blockDim.x + threadIdx.x] += 1.0f;
}

extern "C" __global__ void reads_cluster_rank(int* out) {
  out[blockIdx.x] = cg::this_cluster().block_rank();
}

// Not a cluster kernel: the sm_90 target alone changes nothing.
extern "C" __global__ void plain_on_sm90(float* x) {
  x[threadIdx.x] *= 3.0f;
}
