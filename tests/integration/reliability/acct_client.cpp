// sluice-acct-client: a driver-API program whose every kernel launch can be accounted for. Each
// launch appends its own sequence number to a log in device memory (the fake driver's append_u32
// op); at the end the program reads the log back and checks that every launch it made ran
// exactly once, in its stream's order. The reliability tests and scripts/soak run many of these
// under libsluice.so while they kill clients and daemons.
//
//   sluice-acct-client --role rt|be [--duration-s S] [--kernel-us U] [--period-us P] [--depth D]
//                      [--out FILE] [--extra-module FILE]... [--ptx FILE --kernel NAME]
//
// rt: one launch every P us, each waited for (launch -> completion latency, and the time the
//     launch call itself took); be: keeps D launches in flight. SIGTERM or SIGINT end the run
// early, cleanly. It prints (or writes to FILE) one JSON object:
//   launched, failed_calls, logged, distinct, lost, duplicated, out_of_order,
//   launch_call_us and latency_us (max, p99, p50, count), fake (the fake driver's counters),
//   launch_call_own_us: each launch call's time less the time its thread waited for a CPU (the
//   run-queue delay of /proc/thread-self/schedstat) and less the time it spent inside the driver
//   below the shim (sluice_fake_thread_driver_ns): the shim's own time, told apart from an
//   overloaded machine's scheduling and from the fake device's locks; absent where either figure
//   is not available.
//   slowest_own_call: the call with the most own time, {us, at_s, voluntary_switches}: a call
//   that never blocked (no voluntary context switch) cannot have waited on anything, however
//   long a virtual machine's stolen time made it.
//
// --extra-module loads another image first (as programs load many modules; for the kill path's
// handling of bad PTX and corrupt fatbins) and never launches from it. --ptx launches NAME
// (one u64 parameter: ns per block, as sluice_spin) from that PTX instead of the logging kernel;
// the fake driver runs such kernels as no-ops or spins, so there is no log: lost and duplicated
// then come from the driver's counters (launches executed + failed versus made).
//
// Linked to libcuda.so.1 (the fake's file); with LD_PRELOAD=libsluice.so the shim answers.
#include <cuda.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sluice/fake/fake_driver.h"

namespace {

std::atomic<bool> g_stop{false};

void on_stop_signal(int) { g_stop.store(true); }

struct Options {
  std::string role = "be";
  double duration_s = 2;
  double kernel_us = 200;
  double period_us = 2000;
  unsigned depth = 8;
  std::string out;
  std::vector<std::string> extra_modules;
  std::string ptx;
  std::string kernel;
};

struct DriverError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(CUresult result, const char* what) {
  if (result == CUDA_SUCCESS) return;
  const char* name = nullptr;
  cuGetErrorName(result, &name);
  throw DriverError(std::string(what) + " failed: " + (name != nullptr ? name : std::to_string(result)));
}

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

// The calling thread's total run-queue wait in ns (the second field of schedstat), or -1 when the
// kernel does not report it. The descriptor stays open: one pread per reading.
class RunQueueClock {
 public:
  RunQueueClock() : fd_(open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC)) {}
  ~RunQueueClock() {
    if (fd_ >= 0) close(fd_);
  }
  RunQueueClock(const RunQueueClock&) = delete;
  RunQueueClock& operator=(const RunQueueClock&) = delete;

  long long waited_ns() const {
    if (fd_ < 0) return -1;
    char text[128];
    const ssize_t n = pread(fd_, text, sizeof(text) - 1, 0);
    if (n <= 0) return -1;
    text[n] = '\0';
    unsigned long long cpu = 0, waited = 0;
    return std::sscanf(text, "%llu %llu", &cpu, &waited) == 2 ? static_cast<long long>(waited) : -1;
  }

 private:
  int fd_;
};

// The calling thread's voluntary context switches so far (it blocked: a lock, a sleep, a wait).
long voluntary_switches() {
  rusage usage{};
  return getrusage(RUSAGE_THREAD, &usage) == 0 ? usage.ru_nvcsw : -1;
}

std::string summary(std::vector<double> values) {
  if (values.empty()) return "{\"count\": 0}";
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    return values[std::min(values.size() - 1, static_cast<std::size_t>(q * static_cast<double>(values.size())))];
  };
  char text[200];
  std::snprintf(text, sizeof(text), "{\"count\": %zu, \"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}", values.size(),
                at(0.5), at(0.99), values.back());
  return text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The fake driver's counters of this process, found by path under the shim (SLUICE_REAL_LIBCUDA)
// or as the libcuda.so.1 this program was linked to; all zero elsewhere.
void* fake_symbol(const char* name) {
  const char* real = std::getenv("SLUICE_REAL_LIBCUDA");
  void* fake = dlopen(real != nullptr ? real : "libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  return fake != nullptr ? dlsym(fake, name) : nullptr;
}

sluice_fake_counters fake_counters(bool* found = nullptr) {
  using Get = void (*)(sluice_fake_counters*, size_t);
  auto get = reinterpret_cast<Get>(fake_symbol("sluice_fake_counters_get"));
  sluice_fake_counters c{};
  if (get != nullptr) get(&c, sizeof(c));
  if (found != nullptr) *found = get != nullptr;
  return c;
}

std::string fake_counters_json() {
  bool found = false;
  const sluice_fake_counters c = fake_counters(&found);
  if (!found) return "null";
  char text[400];
  std::snprintf(text, sizeof(text),
                "{\"launches_submitted\": %llu, \"launches_executed\": %llu, \"launches_failed\": %llu}",
                static_cast<unsigned long long>(c.launches_submitted),
                static_cast<unsigned long long>(c.launches_executed),
                static_cast<unsigned long long>(c.launches_failed));
  return text;
}

int run(const Options& o) {
  check(cuInit(0), "cuInit");
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  check(cuDeviceGet(&device, 0), "cuDeviceGet");
  check(cuDevicePrimaryCtxRetain(&ctx, device), "cuDevicePrimaryCtxRetain");
  check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
  for (const std::string& path : o.extra_modules) {
    CUmodule extra = nullptr;
    const std::string image = read_file(path);
    const CUresult loaded = cuModuleLoadData(&extra, image.data());
    std::fprintf(stderr, "sluice-acct-client: extra module %s: %s\n", path.c_str(),
                 loaded == CUDA_SUCCESS ? "loaded" : "refused by the driver");
  }
  const bool logging = o.ptx.empty();
  const std::string module_text =
      logging ? "# sluice fake module v1\nkernel acct_append params=8,4 op=append_u32 duration_us=" +
                    std::to_string(o.kernel_us) + "\n"
              : read_file(o.ptx);
  CUmodule module = nullptr;
  CUfunction append = nullptr;
  check(cuModuleLoadData(&module, module_text.c_str()), "cuModuleLoadData");
  check(cuModuleGetFunction(&append, module, logging ? "acct_append" : o.kernel.c_str()), "cuModuleGetFunction");
  std::uint64_t spin_ns = static_cast<std::uint64_t>(o.kernel_us * 1000);
  CUstream stream = nullptr;
  check(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");

  // The log holds a count then one word per launch; the run stops before it is full.
  const bool rt = o.role == "rt";
  const double per_s = rt ? 1e6 / std::max(o.period_us, 1.0) : 1e6 / std::max(o.kernel_us, 1.0);
  const std::size_t capacity = std::min<std::size_t>(
      std::size_t{1} << 24, static_cast<std::size_t>(per_s * o.duration_s * 1.5) + 1024);
  CUdeviceptr log = 0;
  check(cuMemAlloc(&log, (capacity + 1) * 4), "cuMemAlloc");
  // On the launches' stream: a cuMemsetD32 would run on the legacy stream, which a non-blocking
  // stream does not wait for.
  check(cuMemsetD32Async(log, 0, capacity + 1, stream), "cuMemsetD32Async");

  std::vector<CUevent> ring(std::max(o.depth, 1u));
  for (auto& e : ring) check(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  std::uint32_t launched = 0, failed_calls = 0;
  std::uint64_t completed = 0;
  std::vector<double> call_us, call_own_us, latency_us;
  const RunQueueClock run_queue;  // this thread's: every launch is made from it
  using DriverNs = std::uint64_t (*)();
  const auto driver_ns = reinterpret_cast<DriverNs>(fake_symbol("sluice_fake_thread_driver_ns"));
  double slowest_own_us = -1, slowest_own_at_s = 0;
  long slowest_own_switches = 0;
  const std::uint64_t begin = now_ns();
  const std::uint64_t stop = begin + static_cast<std::uint64_t>(o.duration_s * 1e9);
  auto launch = [&](std::uint32_t tag) {
    void* logged_params[] = {&log, &tag};
    void* spin_params[] = {&spin_ns};
    void** params = logging ? logged_params : spin_params;
    const long switches0 = voluntary_switches();
    const long long waited0 = run_queue.waited_ns();
    const std::uint64_t driver0 = driver_ns != nullptr ? driver_ns() : 0;
    const std::uint64_t t0 = now_ns();
    const CUresult result = cuLaunchKernel(append, 1, 1, 1, 32, 1, 1, 0, stream, params, nullptr);
    const double took_us = static_cast<double>(now_ns() - t0) / 1000.0;
    const std::uint64_t driver1 = driver_ns != nullptr ? driver_ns() : 0;
    const long long waited1 = run_queue.waited_ns();
    const long switches1 = voluntary_switches();
    call_us.push_back(took_us);
    if (driver_ns != nullptr && waited0 >= 0 && waited1 >= waited0) {
      const auto not_shim_ns = waited1 - waited0 + static_cast<long long>(driver1 - driver0);
      const double not_shim_us = static_cast<double>(not_shim_ns) / 1000.0;
      const double own_us = std::max(0.0, took_us - not_shim_us);
      call_own_us.push_back(own_us);
      if (own_us > slowest_own_us) {
        slowest_own_us = own_us;
        slowest_own_at_s = static_cast<double>(t0 - begin) / 1e9;
        slowest_own_switches = switches1 - switches0;
      }
    }
    return result;
  };
  while (!g_stop.load() && now_ns() < stop && launched + 1 < capacity) {
    if (rt) {
      const std::uint64_t target = begin + static_cast<std::uint64_t>(launched * o.period_us * 1000);
      while (now_ns() < target && !g_stop.load()) std::this_thread::sleep_for(std::chrono::microseconds(200));
      const std::uint64_t t0 = now_ns();
      if (launch(launched) != CUDA_SUCCESS) {
        ++failed_calls;
        continue;
      }
      ++launched;
      check(cuStreamSynchronize(stream), "cuStreamSynchronize");
      latency_us.push_back(static_cast<double>(now_ns() - t0) / 1000.0);
    } else {
      if (launched - completed == ring.size()) {
        check(cuEventSynchronize(ring[completed % ring.size()]), "cuEventSynchronize");
        ++completed;
        continue;
      }
      if (launch(launched) != CUDA_SUCCESS) {
        ++failed_calls;
        continue;
      }
      check(cuEventRecord(ring[launched % ring.size()], stream), "cuEventRecord");
      ++launched;
    }
  }
  check(cuStreamSynchronize(stream), "cuStreamSynchronize");

  std::vector<std::uint32_t> words(std::size_t{launched} + 1);
  check(cuMemcpyDtoH(words.data(), log, words.size() * 4), "cuMemcpyDtoH");
  const std::uint32_t logged = std::min<std::uint32_t>(words[0], launched);
  if (words[0] > launched) {
    // More entries than launches: read them all so that the duplicates are counted.
    words.resize(std::size_t{std::min<std::uint32_t>(words[0], static_cast<std::uint32_t>(capacity))} + 1);
    check(cuMemcpyDtoH(words.data(), log, words.size() * 4), "cuMemcpyDtoH");
  }
  const std::uint32_t entries = static_cast<std::uint32_t>(words.size() - 1) < words[0]
                                    ? static_cast<std::uint32_t>(words.size() - 1)
                                    : words[0];
  std::vector<std::uint32_t> seen(launched, 0);
  std::uint64_t duplicated = 0, out_of_order = 0, foreign = 0;
  for (std::uint32_t i = 0; i < entries; ++i) {
    const std::uint32_t tag = words[1 + i];
    if (tag >= launched) {
      ++foreign;
      continue;
    }
    if (seen[tag]++ != 0) ++duplicated;
    if (i > 0 && tag <= words[i]) ++out_of_order;
  }
  auto distinct = static_cast<std::uint64_t>(std::count_if(seen.begin(), seen.end(), [](auto n) { return n > 0; }));
  std::uint64_t lost = launched - distinct;
  (void)logged;
  // Where the first gap is, for the report: the sequence number no entry carries.
  long long first_missing = -1;
  for (std::uint32_t t = 0; t < launched; ++t) {
    if (seen[t] == 0) {
      first_missing = t;
      break;
    }
  }
  if (!logging) {  // no log: the driver's counters say what ran
    const sluice_fake_counters c = fake_counters();
    const std::uint64_t finished = c.launches_executed + c.launches_failed;
    distinct = std::min<std::uint64_t>(finished, launched);
    lost = launched - distinct;
    duplicated = finished > launched ? finished - launched : 0;
    out_of_order = 0;
    foreign = 0;
  }

  char head[600];
  std::snprintf(head, sizeof(head),
                "{\"role\": \"%s\", \"pid\": %d, \"launched\": %u, \"failed_calls\": %u, \"logged\": %u, "
                "\"distinct\": %llu, \"lost\": %llu, \"duplicated\": %llu, \"out_of_order\": %llu, "
                "\"foreign\": %llu, \"first_missing\": %lld, \"seconds\": %.3f, ",
                o.role.c_str(), static_cast<int>(getpid()), launched, failed_calls, entries,
                static_cast<unsigned long long>(distinct), static_cast<unsigned long long>(lost),
                static_cast<unsigned long long>(duplicated), static_cast<unsigned long long>(out_of_order),
                static_cast<unsigned long long>(foreign), first_missing, static_cast<double>(now_ns() - begin) / 1e9);
  std::string own_json;
  if (!call_own_us.empty() && call_own_us.size() == call_us.size()) {
    char slowest[160];
    std::snprintf(slowest, sizeof(slowest),
                  ", \"slowest_own_call\": {\"us\": %.1f, \"at_s\": %.3f, \"voluntary_switches\": %ld}",
                  slowest_own_us, slowest_own_at_s, slowest_own_switches);
    own_json = ", \"launch_call_own_us\": " + summary(call_own_us) + slowest;
  }
  const std::string json = std::string(head) + "\"launch_call_us\": " + summary(call_us) + own_json +
                           ", \"latency_us\": " + summary(latency_us) + ", \"fake\": " + fake_counters_json() + "}";
  if (o.out.empty()) {
    std::printf("%s\n", json.c_str());
  } else {
    std::ofstream(o.out) << json << "\n";
  }
  for (auto& e : ring) cuEventDestroy(e);
  cuStreamDestroy(stream);
  cuMemFree(log);
  return lost == 0 && duplicated == 0 && out_of_order == 0 && foreign == 0 ? 0 : 3;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + arg);
    const char* value = argv[++i];
    try {
      if (arg == "--role") o.role = value;
      else if (arg == "--duration-s") o.duration_s = std::stod(value);
      else if (arg == "--kernel-us") o.kernel_us = std::stod(value);
      else if (arg == "--period-us") o.period_us = std::stod(value);
      else if (arg == "--depth") o.depth = static_cast<unsigned>(std::stoul(value));
      else if (arg == "--out") o.out = value;
      else if (arg == "--extra-module") o.extra_modules.push_back(value);
      else if (arg == "--ptx") o.ptx = value;
      else if (arg == "--kernel") o.kernel = value;
      else throw std::invalid_argument("unknown option " + arg);
    } catch (const std::logic_error& error) {
      if (dynamic_cast<const std::invalid_argument*>(&error) != nullptr &&
          std::string(error.what()).rfind("unknown option", 0) == 0)
        throw;
      throw std::invalid_argument(arg + ": bad value '" + value + "'");
    }
  }
  if (o.role != "rt" && o.role != "be") throw std::invalid_argument("--role: '" + o.role + "' is not rt or be");
  if (o.ptx.empty() != o.kernel.empty()) throw std::invalid_argument("--ptx and --kernel go together");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "sluice-acct-client: %s\n", error.what());
    return 2;
  }
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  try {
    return run(options);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "sluice-acct-client: %s\n", error.what());
    return 1;
  }
}
