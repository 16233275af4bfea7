// mechanisms: what each of sluice's preemption mechanisms does for a real-time (RT) client whose
// tiny kernels arrive while a best-effort (BE) client in another process keeps the GPU busy, and
// what it costs the BE client. scripts/gpu/mechanisms.py runs the matrix (MPS and timeslice, BE
// blocks of 20 us and 1 ms, each mechanism alone and combined) and writes the results.
//
//   mechanisms be   --sync FILE --block-us U [--green RESERVE] [--kill] [--standalone-ms MS]
//   mechanisms rt   --sync FILE [--samples N] [--priority high|low] [--kill] [--alone]
//   mechanisms smid --block-us U --reserve R
//
// be:   launches one-wave kernels of blocks that spin for U us, back to back (two in flight), on a
//       least-priority stream, or on a stream of a green context that leaves RESERVE SMs free.
//       With --kill its blocks read a device-memory kill word at entry (thread 0, broadcast through
//       shared memory) and a per-launch done bitmap; a kernel that a kill cut short is relaunched
//       once the word is cleared and runs only its blocks that never ran. Throughput is BE blocks
//       completed per second, timed on the GPU between two markers.
// rt:   launches a 4-block kernel at random intervals and times call-to-completion on the host.
//       --priority high uses the context's greatest stream priority. --kill sets the BE client's
//       kill word (opened through a CUDA IPC handle) with cuStreamWriteValue32 before each launch
//       and clears it after; the time includes the write.
// smid: one process: a BE kernel on a green-context stream and RT kernels on a full-GPU stream
//       record %smid per block, to show the green context confines BE to its partition.
// Each role prints one JSON object on stdout. Exit 77 without a GPU, 1 on any CUDA error.
#include <cuda.h>
#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void fail(const char* what, const char* detail, int line) {
  std::fprintf(stderr, "mechanisms: %s failed at line %d: %s\n", what, line, detail);
  std::exit(1);
}
#define CK(x)                                                                 \
  do {                                                                        \
    cudaError_t e_ = (x);                                                     \
    if (e_ != cudaSuccess) fail(#x, cudaGetErrorString(e_), __LINE__);        \
  } while (0)
#define CU(x)                                                                 \
  do {                                                                        \
    CUresult e_ = (x);                                                        \
    if (e_ != CUDA_SUCCESS) {                                                 \
      const char* s_ = "unknown";                                             \
      if (drv.cuGetErrorString) drv.cuGetErrorString(e_, &s_);                \
      fail(#x, s_, __LINE__);                                                 \
    }                                                                         \
  } while (0)

// Driver entry points, through the runtime's cuGetProcAddress (so libsluice.so sees them too).
struct Driver {
  CUresult (*cuGetErrorString)(CUresult, const char**) = nullptr;
  CUresult (*cuDeviceGetDevResource)(CUdevice, CUdevResource*, CUdevResourceType) = nullptr;
  CUresult (*cuDevSmResourceSplitByCount)(CUdevResource*, unsigned*, const CUdevResource*,
                                          CUdevResource*, unsigned, unsigned) = nullptr;
  CUresult (*cuDevResourceGenerateDesc)(CUdevResourceDesc*, CUdevResource*, unsigned) = nullptr;
  CUresult (*cuGreenCtxCreate)(CUgreenCtx*, CUdevResourceDesc, CUdevice, unsigned) = nullptr;
  CUresult (*cuGreenCtxStreamCreate)(CUstream*, CUgreenCtx, unsigned, int) = nullptr;
  CUresult (*cuStreamWriteValue32)(CUstream, CUdeviceptr, cuuint32_t, unsigned) = nullptr;
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, CUstream, void**, void**) = nullptr;
} drv;

template <typename Fn>
void entry(const char* name, Fn*& fn, unsigned version) {
  cudaDriverEntryPointQueryResult status{};
  void* p = nullptr;
  CK(cudaGetDriverEntryPointByVersion(name, &p, version, cudaEnableDefault, &status));
  if (status != cudaDriverEntryPointSuccess || p == nullptr) fail("cuGetProcAddress", name, __LINE__);
  fn = reinterpret_cast<Fn*>(p);
}

void load_driver() {
  entry("cuGetErrorString", drv.cuGetErrorString, 12000);
  entry("cuDeviceGetDevResource", drv.cuDeviceGetDevResource, 12040);
  entry("cuDevSmResourceSplitByCount", drv.cuDevSmResourceSplitByCount, 12040);
  entry("cuDevResourceGenerateDesc", drv.cuDevResourceGenerateDesc, 12040);
  entry("cuGreenCtxCreate", drv.cuGreenCtxCreate, 12040);
  entry("cuGreenCtxStreamCreate", drv.cuGreenCtxStreamCreate, 12050);
  entry("cuStreamWriteValue32", drv.cuStreamWriteValue32, 12000);
  entry("cuLaunchKernel", drv.cuLaunchKernel, 12000);
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ unsigned smid() {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}

// A BE block: spins for spin_ns. With a kill word, thread 0 reads it (and the block's done bit)
// once at entry and the block leaves at once when either is set; a finished block sets its bit.
__global__ void be_spin(unsigned long long spin_ns, const volatile int* kill_word,
                        unsigned char* done, unsigned long long* completed) {
  __shared__ int skip;
  if (threadIdx.x == 0) skip = kill_word != nullptr && (*kill_word != 0 || done[blockIdx.x] != 0);
  __syncthreads();
  if (skip) return;
  const unsigned long long start = global_ns();
  while (global_ns() - start < spin_ns) {
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (done != nullptr) done[blockIdx.x] = 1;
    atomicAdd(completed, 1ull);
  }
}

__global__ void rt_tiny(int* out) { out[blockIdx.x * blockDim.x + threadIdx.x] += 1; }

// Records the SM of each block; spins so that the blocks overlap with the other stream's.
__global__ void smid_spin(unsigned long long spin_ns, unsigned* sm_of_block) {
  const unsigned long long start = global_ns();
  while (global_ns() - start < spin_ns) {
  }
  if (threadIdx.x == 0) sm_of_block[blockIdx.x] = smid();
}

// The page both processes map.
struct Shared {
  std::atomic<std::uint32_t> be_ready;
  std::atomic<std::uint32_t> measuring;
  std::atomic<std::uint32_t> stop;
  std::atomic<std::uint32_t> be_has_kill_word;
  std::atomic<std::uint64_t> kills;    // incremented before each kill word set
  std::atomic<std::uint64_t> cleared;  // = kills once the word is clear again on the GPU
  cudaIpcMemHandle_t kill_word;
};
static_assert(sizeof(Shared) <= 4096);

Shared* map_shared(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
  if (fd < 0 || ::ftruncate(fd, 4096) != 0) fail("open", path.c_str(), __LINE__);
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail("mmap", path.c_str(), __LINE__);
  return static_cast<Shared*>(p);
}

struct Args {
  std::string role, sync;
  double block_us = 1000;
  unsigned green_reserve = 0;  // 0: full GPU
  bool kill = false;
  bool alone = false;
  bool high_priority = false;
  int samples = 400;
  int standalone_ms = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) fail("arguments", "usage: mechanisms be|rt|smid [options]", __LINE__);
  a.role = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("arguments", (k + " needs a value").c_str(), __LINE__);
      return argv[++i];
    };
    if (k == "--sync") a.sync = value();
    else if (k == "--block-us") a.block_us = std::stod(value());
    else if (k == "--green" || k == "--reserve") a.green_reserve = std::stoul(value());
    else if (k == "--kill") a.kill = true;
    else if (k == "--alone") a.alone = true;
    else if (k == "--samples") a.samples = std::stoi(value());
    else if (k == "--standalone-ms") a.standalone_ms = std::stoi(value());
    else if (k == "--priority") {
      const std::string p = value();
      if (p != "high" && p != "low") fail("arguments", "--priority takes high or low", __LINE__);
      a.high_priority = p == "high";
    } else {
      fail("arguments", ("unknown option " + k).c_str(), __LINE__);
    }
  }
  return a;
}

double us_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

struct Green {
  CUstream stream = nullptr;
  unsigned sms = 0;      // SMs the BE partition has
  unsigned reserved = 0;  // SMs left free
};

// A green context with all SMs but `reserve` and a least-priority stream in it.
Green make_green(unsigned reserve, int least_priority) {
  CUdevice dev = 0;
  CUdevResource all{}, part[1]{}, rest{};
  unsigned groups = 1;
  CU(drv.cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
  CU(drv.cuDevSmResourceSplitByCount(part, &groups, &all, &rest, 0, reserve));
  CUdevResourceDesc desc{};
  CU(drv.cuDevResourceGenerateDesc(&desc, &rest, 1));
  CUgreenCtx green = nullptr;
  CU(drv.cuGreenCtxCreate(&green, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM));
  Green g;
  CU(drv.cuGreenCtxStreamCreate(&g.stream, green, CU_STREAM_NON_BLOCKING, least_priority));
  g.sms = rest.sm.smCount;
  g.reserved = part[0].sm.smCount;
  return g;
}

int sm_count() {
  int n = 0;
  CK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0));
  return n;
}

std::string device_name() {
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  return prop.name;
}

void launch_be(CUstream stream, unsigned blocks, unsigned long long spin_ns, int* kill_word,
               unsigned char* done, unsigned long long* completed) {
  void* params[] = {&spin_ns, &kill_word, &done, &completed};
  CUfunction f = nullptr;
  CK(cudaGetFuncBySymbol(reinterpret_cast<cudaFunction_t*>(&f), reinterpret_cast<const void*>(be_spin)));
  CU(drv.cuLaunchKernel(f, blocks, 1, 1, 256, 1, 1, 0, stream, params, nullptr));
}

int run_be(const Args& a) {
  Shared* shared = a.standalone_ms > 0 ? nullptr : map_shared(a.sync);
  int least = 0, greatest = 0;
  CK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  const int sms = sm_count();
  CUstream stream = nullptr;
  Green green;
  if (a.green_reserve > 0) {
    green = make_green(a.green_reserve, least);
    stream = green.stream;
  } else {
    cudaStream_t s = nullptr;
    CK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, least));
    stream = reinterpret_cast<CUstream>(s);
  }
  // One wave over the whole GPU: 8 blocks of 256 threads fill an SM's 2048 threads. The grid is
  // the full GPU's even in a partition, as a framework would size it.
  const unsigned blocks = static_cast<unsigned>(sms) * 8;
  const auto spin_ns = static_cast<unsigned long long>(a.block_us * 1000);
  int* kill_word = nullptr;
  unsigned long long* completed = nullptr;
  unsigned long long* snapshots = nullptr;  // pinned: counter at the start and the end of the window
  constexpr int kSlots = 2;
  unsigned char* done[kSlots] = {nullptr, nullptr};
  CK(cudaMalloc(&completed, sizeof *completed));
  CK(cudaMemset(completed, 0, sizeof *completed));
  CK(cudaHostAlloc(&snapshots, 2 * sizeof *snapshots, cudaHostAllocDefault));
  if (a.kill) {
    CK(cudaMalloc(&kill_word, 256));
    CK(cudaMemset(kill_word, 0, 256));
    for (auto& d : done) CK(cudaMalloc(&d, blocks));
  }
  CK(cudaDeviceSynchronize());
  if (shared != nullptr) {
    if (a.kill) {
      CK(cudaIpcGetMemHandle(&shared->kill_word, kill_word));
      shared->be_has_kill_word.store(1);
    }
    shared->be_ready.store(1);
  }
  cudaStream_t rs = reinterpret_cast<cudaStream_t>(stream);
  cudaEvent_t window[2], slot_done[kSlots];
  for (auto& e : window) CK(cudaEventCreate(&e));
  for (auto& e : slot_done) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  std::uint64_t kills_at_launch[kSlots] = {0, 0};
  bool kill_active_at_launch[kSlots] = {false, false};
  bool in_flight[kSlots] = {false, false};
  std::uint64_t relaunches = 0, kernels = 0;
  auto kills_now = [&] { return shared != nullptr ? shared->kills.load() : 0; };
  auto cleared_now = [&] { return shared != nullptr ? shared->cleared.load() : 0; };
  auto launch_slot = [&](int slot, bool fresh) {
    if (a.kill && fresh) CK(cudaMemsetAsync(done[slot], 0, blocks, rs));
    kills_at_launch[slot] = kills_now();
    kill_active_at_launch[slot] = kills_at_launch[slot] != cleared_now();
    launch_be(stream, blocks, spin_ns, kill_word, done[slot], completed);
    CK(cudaEventRecord(slot_done[slot], rs));
    in_flight[slot] = true;
    if (fresh) ++kernels;
  };
  // Waits for the kernel of `slot`. A kill may have cut it short (the word was set while it ran):
  // once the word is clear again it is relaunched with its done bitmap, so that only the blocks
  // that never ran run now, until no kill overlapped a run.
  auto finish_slot = [&](int slot) {
    if (!in_flight[slot]) return;
    CK(cudaEventSynchronize(slot_done[slot]));
    in_flight[slot] = false;
    while (a.kill && (kills_now() != kills_at_launch[slot] || kill_active_at_launch[slot])) {
      while (cleared_now() < kills_now() && !shared->stop.load()) std::this_thread::yield();
      launch_slot(slot, false);
      ++relaunches;
      CK(cudaEventSynchronize(slot_done[slot]));
      in_flight[slot] = false;
    }
  };
  const auto start = std::chrono::steady_clock::now();
  const auto warmup = std::chrono::milliseconds(300);
  bool window_open = false;
  for (int slot = 0;; slot = (slot + 1) % kSlots) {
    finish_slot(slot);
    const bool measuring = shared != nullptr ? shared->measuring.load() != 0
                                             : std::chrono::steady_clock::now() - start > warmup;
    const bool stopping = shared != nullptr
                              ? shared->stop.load() != 0
                              : std::chrono::steady_clock::now() - start >
                                    warmup + std::chrono::milliseconds(a.standalone_ms);
    if (!window_open && measuring) {
      CK(cudaMemcpyAsync(&snapshots[0], completed, sizeof *completed, cudaMemcpyDeviceToHost, rs));
      CK(cudaEventRecord(window[0], rs));
      window_open = true;
    }
    if (stopping) {
      if (!window_open) fail("be", "stopped before the measurement window opened", __LINE__);
      break;
    }
    launch_slot(slot, true);
  }
  CK(cudaEventRecord(window[1], rs));
  CK(cudaMemcpyAsync(&snapshots[1], completed, sizeof *completed, cudaMemcpyDeviceToHost, rs));
  CK(cudaStreamSynchronize(rs));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, window[0], window[1]));
  const double blocks_done = static_cast<double>(snapshots[1] - snapshots[0]);
  // Every kernel launched to completion, killed ones resumed: each block must have run once.
  for (int slot = 0; slot < kSlots; ++slot) finish_slot(slot);
  unsigned long long total = 0;
  CK(cudaMemcpy(&total, completed, sizeof total, cudaMemcpyDeviceToHost));
  const unsigned long long expected = kernels * blocks;
  std::printf(
      "{\"role\":\"be\",\"device\":\"%s\",\"sms\":%d,\"block_us\":%.1f,\"green_sms\":%u,"
      "\"reserved_sms\":%u,\"kill\":%s,\"window_ms\":%.3f,\"blocks\":%.0f,\"blocks_per_s\":%.1f,"
      "\"kernels\":%llu,\"relaunches\":%llu,\"blocks_run\":%llu,\"blocks_expected\":%llu,"
      "\"exactly_once\":%s}\n",
      device_name().c_str(), sms, a.block_us, green.sms, green.reserved, a.kill ? "true" : "false",
      ms, blocks_done, blocks_done / (ms / 1000.0), static_cast<unsigned long long>(kernels),
      static_cast<unsigned long long>(relaunches), total, expected,
      total == expected ? "true" : "false");
  return total == expected ? 0 : 1;
}

int run_rt(const Args& a) {
  Shared* shared = a.alone ? nullptr : map_shared(a.sync);
  int least = 0, greatest = 0;
  CK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  cudaStream_t s = nullptr;
  CK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, a.high_priority ? greatest : least));
  int* out = nullptr;
  CK(cudaMalloc(&out, 4 * 256 * sizeof(int)));
  CK(cudaMemset(out, 0, 4 * 256 * sizeof(int)));
  for (int i = 0; i < 50; ++i) rt_tiny<<<4, 256, 0, s>>>(out);
  CK(cudaStreamSynchronize(s));
  CUdeviceptr kill_word = 0;
  if (!a.alone) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!shared->be_ready.load()) {
      if (std::chrono::steady_clock::now() > deadline) fail("rt", "the BE client never got ready", __LINE__);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (a.kill) {
      if (!shared->be_has_kill_word.load()) fail("rt", "--kill, but the BE client has no kill word", __LINE__);
      void* p = nullptr;
      CK(cudaIpcOpenMemHandle(&p, shared->kill_word, cudaIpcMemLazyEnablePeerAccess));
      kill_word = reinterpret_cast<CUdeviceptr>(p);
    }
    shared->measuring.store(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> gap_us(500, 3000);
  std::vector<double> latency;
  latency.reserve(a.samples);
  const CUstream cs = reinterpret_cast<CUstream>(s);
  for (int i = 0; i < a.samples; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(gap_us(rng)));
    const auto t0 = std::chrono::steady_clock::now();
    if (kill_word != 0) {
      shared->kills.fetch_add(1);
      CU(drv.cuStreamWriteValue32(cs, kill_word, 1, 0));
    }
    rt_tiny<<<4, 256, 0, s>>>(out);
    CK(cudaStreamSynchronize(s));
    latency.push_back(us_between(t0, std::chrono::steady_clock::now()));
    if (kill_word != 0) {
      CU(drv.cuStreamWriteValue32(cs, kill_word, 0, 0));
      CK(cudaStreamSynchronize(s));
      shared->cleared.store(shared->kills.load());
    }
  }
  if (shared != nullptr) shared->stop.store(1);
  double mean = 0;
  for (double v : latency) mean += v;
  mean /= static_cast<double>(latency.size());
  std::printf(
      "{\"role\":\"rt\",\"device\":\"%s\",\"priority\":\"%s\",\"kill\":%s,\"alone\":%s,"
      "\"samples\":%zu,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"max_us\":%.2f,"
      "\"mean_us\":%.2f}\n",
      device_name().c_str(), a.high_priority ? "high" : "low", a.kill ? "true" : "false",
      a.alone ? "true" : "false", latency.size(), percentile(latency, 0.5), percentile(latency, 0.9),
      percentile(latency, 0.99), percentile(latency, 1.0), mean);
  if (kill_word != 0) CK(cudaIpcCloseMemHandle(reinterpret_cast<void*>(kill_word)));
  return 0;
}

// Time of one grid of `blocks` smid_spin blocks on `stream`, and the SMs its blocks ran on.
struct SmidRun {
  double ms = 0;
  std::set<unsigned> sms;
};

int run_smid(const Args& a) {
  int least = 0, greatest = 0;
  CK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  const int sms = sm_count();
  const Green green = make_green(a.green_reserve, least);
  cudaStream_t full = nullptr, rt = nullptr;
  CK(cudaStreamCreateWithPriority(&full, cudaStreamNonBlocking, least));
  CK(cudaStreamCreateWithPriority(&rt, cudaStreamNonBlocking, greatest));
  const unsigned blocks = static_cast<unsigned>(sms) * 8;
  const auto spin_ns = static_cast<unsigned long long>(a.block_us * 1000);
  unsigned *be_sm = nullptr, *rt_sm = nullptr;
  constexpr unsigned kRtBlocks = 16, kRtLaunches = 20;
  CK(cudaMallocManaged(&be_sm, blocks * sizeof(unsigned)));
  CK(cudaMallocManaged(&rt_sm, kRtBlocks * kRtLaunches * sizeof(unsigned)));
  CUfunction f = nullptr;
  CK(cudaGetFuncBySymbol(reinterpret_cast<cudaFunction_t*>(&f), reinterpret_cast<const void*>(smid_spin)));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto run = [&](CUstream stream, bool with_rt) {
    CK(cudaMemset(be_sm, 0xff, blocks * sizeof(unsigned)));
    CK(cudaDeviceSynchronize());
    unsigned* target = be_sm;
    void* params[] = {const_cast<unsigned long long*>(&spin_ns), &target};
    CK(cudaEventRecord(e0, reinterpret_cast<cudaStream_t>(stream)));
    CU(drv.cuLaunchKernel(f, blocks, 1, 1, 256, 1, 1, 0, stream, params, nullptr));
    CK(cudaEventRecord(e1, reinterpret_cast<cudaStream_t>(stream)));
    if (with_rt) {
      // RT kernels of short blocks while the BE grid holds its partition.
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long>(a.block_us / 4)));
      for (unsigned i = 0; i < kRtLaunches; ++i)
        smid_spin<<<kRtBlocks, 32, 0, rt>>>(1000, rt_sm + i * kRtBlocks);
    }
    CK(cudaDeviceSynchronize());
    SmidRun r;
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    r.ms = ms;
    for (unsigned b = 0; b < blocks; ++b) r.sms.insert(be_sm[b]);
    return r;
  };
  run(reinterpret_cast<CUstream>(full), false);  // warm-up
  const SmidRun on_full = run(reinterpret_cast<CUstream>(full), false);
  const SmidRun on_green = run(green.stream, true);
  std::set<unsigned> rt_sms(rt_sm, rt_sm + kRtBlocks * kRtLaunches);
  unsigned overlap = 0;
  for (unsigned sm : rt_sms) overlap += on_green.sms.count(sm);
  const bool confined = on_green.sms.size() <= green.sms && !on_green.sms.count(0xffffffffu);
  std::printf(
      "{\"role\":\"smid\",\"device\":\"%s\",\"sms\":%d,\"block_us\":%.1f,\"green_sms\":%u,"
      "\"reserved_sms\":%u,\"blocks\":%u,\"full_ms\":%.3f,\"green_ms\":%.3f,\"time_ratio\":%.3f,"
      "\"expected_time_ratio\":%.3f,\"full_distinct_sms\":%zu,\"green_distinct_sms\":%zu,"
      "\"rt_distinct_sms\":%zu,\"rt_sms_shared_with_be\":%u,\"confined\":%s}\n",
      device_name().c_str(), sms, a.block_us, green.sms, green.reserved, blocks, on_full.ms,
      on_green.ms, on_green.ms / on_full.ms,
      static_cast<double>((blocks + green.sms * 8 - 1) / (green.sms * 8)) /
          static_cast<double>((blocks + sms * 8 - 1) / (sms * 8)),
      on_full.sms.size(), on_green.sms.size(), rt_sms.size(), overlap, confined ? "true" : "false");
  return confined ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "mechanisms: no GPU\n");
    return 77;
  }
  CK(cudaSetDevice(0));
  CK(cudaFree(nullptr));
  load_driver();
  if (a.role == "be") return run_be(a);
  if (a.role == "rt") return run_rt(a);
  if (a.role == "smid") return run_smid(a);
  fail("arguments", ("unknown role " + a.role).c_str(), __LINE__);
}
