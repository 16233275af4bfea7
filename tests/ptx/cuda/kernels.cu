// Small kernels that cover what the rewriter must handle, compiled to PTX by nvcc at build time
// (tests/ptx/CMakeLists.txt). The expected verdict of each kernel is in analysis_test.cpp.
#include <cassert>
#include <cstdio>

// --- killable: grids, shared memory, barriers, reductions ---
extern "C" __global__ void grid_1d(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] * 2.0f + 1.0f;
}

extern "C" __global__ void grid_2d(float* out, const float* in, int width, int height) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x < width && y < height) out[y * width + x] = in[x * height + y];
}

extern "C" __global__ void grid_3d(int* out, int nx, int ny, int nz) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  const int z = blockIdx.z * blockDim.z + threadIdx.z;
  if (x < nx && y < ny && z < nz) out[(z * ny + y) * nx + x] = x ^ (y << 8) ^ (z << 16);
}

extern "C" __global__ void dynamic_smem_reverse(float* x) {
  extern __shared__ float buffer[];
  const int t = threadIdx.x;
  buffer[t] = x[blockIdx.x * blockDim.x + t];
  __syncthreads();
  x[blockIdx.x * blockDim.x + t] = buffer[blockDim.x - 1 - t];
}

extern "C" __global__ void __launch_bounds__(256, 2) static_smem_sum(const float* x, float* sums) {
  __shared__ float partial[256];
  partial[threadIdx.x] = x[blockIdx.x * 256 + threadIdx.x];
  __syncthreads();
  for (int stride = 128; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) sums[blockIdx.x] = partial[0];
}

// An atomic whose result is unused is a plain reduction.
extern "C" __global__ void atomic_reduce(const int* x, int* total, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) atomicAdd(total, x[i]);
}

extern "C" __global__ void grid_stride(float* x, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    x[i] += 1.0f;
  }
}

extern "C" __global__ void with_printf_assert(const int* x) {
  assert(x[threadIdx.x] >= 0);
  if (threadIdx.x == 0 && x[0] == 12345) printf("block %d\n", blockIdx.x);
}

struct Params {
  double scale;
  int count;
  char tag;
};
extern "C" __global__ void struct_param(Params p, char c, short s, double* out) {
  out[threadIdx.x] = p.scale * p.count + p.tag + c + s;
}

// --- module data ---
__device__ int lookup_table[4] = {3, 1, 4, 1};
__device__ float scale_factor = 2.5f;
__device__ int counter;
__device__ int written_after_init = 7;
__constant__ float coefficients[16];

extern "C" __global__ void reads_initialized_data(int* out) {
  out[threadIdx.x] = lookup_table[threadIdx.x & 3] * static_cast<int>(scale_factor);
}
extern "C" __global__ void reads_constant_memory(float* out) {
  out[threadIdx.x] = coefficients[threadIdx.x & 15];
}
extern "C" __global__ void writes_counter(int* out) {
  out[threadIdx.x] = atomicAdd(&counter, 0) + 1;
}
extern "C" __global__ void bumps_initialized(int amount) {
  if (threadIdx.x == 0) written_after_init += amount;
}
extern "C" __global__ void reads_bumped(int* out) {
  out[threadIdx.x] = written_after_init;
}

// --- communicating ---
__device__ __noinline__ void wait_for(volatile int* flag) {
  while (*flag == 0) {
  }
}
extern "C" __global__ void waits_in_callee(volatile int* flag, int* out) {
  if (blockIdx.x > 0) wait_for(flag);
  out[blockIdx.x] = 1;
}
