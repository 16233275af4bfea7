// A CUDA runtime program linked to the toolkit's real libcudart.so.13. Without a GPU it gets as far
// as the fake driver lets it: libcudart opens libcuda.so.1, asks cuGetProcAddress for every entry
// point, calls cuInit and cuDriverGetVersion, then asks for its private export tables, which the
// fake does not have, and reports cudaErrorSymbolNotFound from then on.
//
// Prints one line per call ("name=<cudaError_t>"), so runs with and without the shim compare.
#include <cuda_runtime_api.h>

#include <cstdio>

int main() {
  int version = 0;
  const cudaError_t driver = cudaDriverGetVersion(&version);
  std::printf("cudaDriverGetVersion=%d version=%d\n", static_cast<int>(driver), version);
  int count = -1;
  std::printf("cudaGetDeviceCount=%d\n", static_cast<int>(cudaGetDeviceCount(&count)));
  void* p = nullptr;
  std::printf("cudaMalloc=%d\n", static_cast<int>(cudaMalloc(&p, 1024)));
  cudaStream_t stream = nullptr;
  std::printf("cudaStreamCreate=%d\n", static_cast<int>(cudaStreamCreate(&stream)));
  std::printf("cudaDeviceSynchronize=%d\n", static_cast<int>(cudaDeviceSynchronize()));
  return 0;
}
