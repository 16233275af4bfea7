// Relocatable device code calling a function defined in another translation unit: its PTX cannot
// be loaded on its own.
extern __device__ int defined_elsewhere(int);

extern "C" __global__ void calls_extern(int* x) {
  x[threadIdx.x] = defined_elsewhere(x[threadIdx.x]);
}

extern "C" __global__ void self_contained(int* x) {
  x[threadIdx.x] += 1;
}
