// A CUDA extension as PyTorch users build them: kernels compiled by nvcc into a shared library,
// linked with the static CUDA runtime, whose fatbin carries sm_90 code and compute_90 PTX. The
// runtime registers that fatbin itself when the library is loaded and launches through the
// runtime API, so running it under libsluice.so shows whether the shim sees the module images the
// runtime loads (and so can build kill twins for them) without hooking the runtime's private
// export table.
//
// scripts/gpu/check_frameworks.py (case cuda_extension) loads it with ctypes and calls
//
//   int sluice_check_extension_run(int steps, float* head, int head_count,
//                                  float* sums, int sums_count);
//
// which updates 4M floats in place `steps` times (about 15 us of GPU time per step on an H100) and
// every 50 steps stores 1024 partial sums of them. A block that ran twice or never would change
// every later step, so the outputs prove exactly-once execution bit for bit. It copies the first
// `head_count` values and the partial sums (`steps / 50 * 1024` floats, at most `sums_count`) out
// and returns 0, or the CUDA runtime's error code.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace {

constexpr int kCount = 1 << 22;
constexpr int kThreads = 256;
constexpr int kSumBlocks = 1024;
constexpr int kCheckpoint = 50;

__global__ void fill(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u;
  h ^= h >> 15;
  x[i] = static_cast<float>(h & 0xffff) / 65536.0f - 0.5f;
}

// In place and not idempotent: running a block twice moves its values on by one more step.
__global__ void relax(float* x, int n, float a) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  x[i] = v * a + 0.25f * sinf(v) + 1e-3f * static_cast<float>(i & 7);
}

// Block b sums elements b, b + 1024, b + 2048, ... in a fixed order (a tree over shared memory),
// so the result is the same bit for bit on every run.
__global__ void partial_sums(const float* x, int n, float* out) {
  __shared__ float lane[kThreads];
  float s = 0.0f;
  for (int i = blockIdx.x + threadIdx.x * kSumBlocks; i < n; i += kThreads * kSumBlocks) s += x[i];
  lane[threadIdx.x] = s;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) lane[threadIdx.x] += lane[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = lane[0];
}

int run(int steps, float* head, int head_count, float* sums, int sums_count) {
  const int checkpoints = steps / kCheckpoint;
  if (steps < 0 || head_count < 0 || head_count > kCount ||
      sums_count < checkpoints * kSumBlocks) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  cudaStream_t stream = nullptr;
  float* x = nullptr;
  float* partials = nullptr;
  cudaError_t status = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (status == cudaSuccess) status = cudaMalloc(&x, sizeof(float) * kCount);
  if (status == cudaSuccess && checkpoints > 0) {
    status = cudaMalloc(&partials, sizeof(float) * checkpoints * kSumBlocks);
  }
  const int blocks = (kCount + kThreads - 1) / kThreads;
  if (status == cudaSuccess) {
    fill<<<blocks, kThreads, 0, stream>>>(x, kCount);
    for (int step = 0; step < steps && status == cudaSuccess; ++step) {
      relax<<<blocks, kThreads, 0, stream>>>(x, kCount, 0.75f);
      if (step % kCheckpoint == kCheckpoint - 1) {
        partial_sums<<<kSumBlocks, kThreads, 0, stream>>>(
            x, kCount, partials + (step / kCheckpoint) * kSumBlocks);
      }
      status = cudaGetLastError();
    }
  }
  if (status == cudaSuccess && head_count > 0) {
    status = cudaMemcpyAsync(head, x, sizeof(float) * head_count, cudaMemcpyDeviceToHost, stream);
  }
  if (status == cudaSuccess && checkpoints > 0) {
    status = cudaMemcpyAsync(sums, partials, sizeof(float) * checkpoints * kSumBlocks,
                             cudaMemcpyDeviceToHost, stream);
  }
  if (status == cudaSuccess) status = cudaStreamSynchronize(stream);
  cudaFree(partials);
  cudaFree(x);
  if (stream != nullptr) cudaStreamDestroy(stream);
  return static_cast<int>(status);
}

}  // namespace

extern "C" int sluice_check_extension_run(int steps, float* head, int head_count, float* sums,
                                          int sums_count) {
  return run(steps, head, head_count, sums, sums_count);
}
