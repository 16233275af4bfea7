// The synthetic best-effort kernel of the kill/resume proof: each block spins for a given number of
// clock cycles, then adds into its slice of `out` (not idempotent: a block that ran twice changes
// the result) and counts its own runs. Compiled to PTX by nvcc; kill_resume instruments it at run
// time.
extern "C" __global__ void slow_blocks(unsigned long long spin_cycles, float* out, const float* in,
                                       unsigned* runs) {
  const long long start = clock64();
  while (static_cast<unsigned long long>(clock64() - start) < spin_cycles) {
  }
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned i = block * blockDim.x + threadIdx.x;
  out[i] += in[i] * 2.0f + static_cast<float>(block & 1023);
  if (threadIdx.x == 0) atomicAdd(&runs[block], 1u);
}
