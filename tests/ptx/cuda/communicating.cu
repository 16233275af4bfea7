// Kernels whose blocks wait for or coordinate with other blocks through memory.
#include <cuda/atomic>

extern "C" __global__ void spin_on_volatile(volatile int* flag, int* data) {
  if (blockIdx.x == 0) {
    data[0] = 42;
    __threadfence();
    *flag = 1;
  } else {
    while (*flag == 0) {
    }
    data[blockIdx.x] = data[0];
  }
}

extern "C" __global__ void spin_on_acquire(int* flag, int* data) {
  cuda::atomic_ref<int, cuda::thread_scope_device> ready(*flag);
  if (blockIdx.x == 0) {
    data[0] = 7;
    ready.store(1, cuda::memory_order_release);
  } else {
    while (ready.load(cuda::memory_order_acquire) == 0) {
    }
    data[blockIdx.x] = data[0];
  }
}

extern "C" __global__ void last_block_done(float* partial, unsigned* count, float* out) {
  __shared__ bool last;
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = blockIdx.x;
    __threadfence();
    last = atomicInc(count, gridDim.x) == gridDim.x - 1;
  }
  __syncthreads();
  if (last && threadIdx.x == 0) {
    float sum = 0;
    for (unsigned i = 0; i < gridDim.x; ++i) sum += partial[i];
    *out = sum;
  }
}

extern "C" __global__ void work_queue(int* next, int* items, int n) {
  __shared__ int index;
  while (true) {
    if (threadIdx.x == 0) index = atomicAdd(next, 1);
    __syncthreads();
    if (index >= n) return;
    items[index] += 1;
    __syncthreads();
  }
}

extern "C" __global__ void spin_lock(int* lock, int* value) {
  if (threadIdx.x == 0) {
    while (atomicCAS(lock, 0, 1) != 0) {
    }
    *value += 1;
    __threadfence();
    atomicExch(lock, 0);
  }
}

extern "C" __global__ void sleepy_wait(const int* flag) {
  while (flag[0] == 0) __nanosleep(100);
}
