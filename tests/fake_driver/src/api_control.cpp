// The control API (include/sluice/fake/fake_driver.h).
#include <algorithm>
#include <chrono>
#include <cstring>

#include "api.h"
#include "driver.h"
#include "executor.h"

using namespace sluice::fake;

namespace {

template <typename Body>
auto guarded(Body&& body, decltype(body()) on_error) noexcept {
  try {
    return body();
  } catch (...) {
    return on_error;
  }
}

bool all_idle(Driver& drv) {
  return std::all_of(drv.devices.begin(), drv.devices.end(), [](const auto& device) { return device->executor->idle(); });
}

}  // namespace

extern "C" int sluice_fake_register_kernel(const char* name, sluice_fake_kernel_fn fn, void* user, uint64_t duration_ns) {
  return guarded(
      [&] {
        if (name == nullptr || fn == nullptr) return -1;
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        drv.host_kernels[name] = HostKernel{fn, user, duration_ns};
        return 0;
      },
      -1);
}

extern "C" int sluice_fake_unregister_kernel(const char* name) {
  return guarded(
      [&] {
        if (name == nullptr) return -1;
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        return drv.host_kernels.erase(name) == 1 ? 0 : -1;
      },
      -1);
}

extern "C" int sluice_fake_fail_kernel(const char* name, int error, int sticky, uint32_t count) {
  return guarded(
      [&] {
        if (name == nullptr || error == 0 || count == 0) return -1;
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        drv.injections[name] = Injection{static_cast<CUresult>(error), sticky != 0, count};
        return 0;
      },
      -1);
}

extern "C" void sluice_fake_clear_failures(void) {
  guarded(
      [&] {
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        drv.injections.clear();
        return 0;
      },
      0);
}

extern "C" void sluice_fake_trace_enable(int on) {
  guarded(
      [&] {
        driver().tracing.store(on != 0);
        return 0;
      },
      0);
}

extern "C" size_t sluice_fake_trace_count(void) {
  return guarded(
      [&] {
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        return drv.trace.size();
      },
      std::size_t{0});
}

extern "C" size_t sluice_fake_trace_read(sluice_fake_trace_record* out, size_t first, size_t max) {
  return guarded(
      [&] {
        if (out == nullptr) return std::size_t{0};
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        if (first >= drv.trace.size()) return std::size_t{0};
        const std::size_t count = std::min(max, drv.trace.size() - first);
        std::copy_n(drv.trace.begin() + static_cast<std::ptrdiff_t>(first), count, out);
        return count;
      },
      std::size_t{0});
}

extern "C" void sluice_fake_trace_clear(void) {
  guarded(
      [&] {
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        drv.trace.clear();
        return 0;
      },
      0);
}

// Every counter of the public struct has its atomic, in the same order.
#define SLUICE_FAKE_COUNT_ONE(name) +1
static_assert(sizeof(sluice_fake_counters) == sizeof(std::uint64_t) * (0 SLUICE_FAKE_COUNTERS(SLUICE_FAKE_COUNT_ONE)));
#undef SLUICE_FAKE_COUNT_ONE

extern "C" void sluice_fake_counters_get(sluice_fake_counters* out, size_t size) {
  if (out == nullptr) return;
  sluice_fake_counters counters{};
  const Counters& source = driver().counters;
#define SLUICE_FAKE_COPY_COUNTER(name) counters.name = source.name.load();
  SLUICE_FAKE_COUNTERS(SLUICE_FAKE_COPY_COUNTER)
#undef SLUICE_FAKE_COPY_COUNTER
  std::memcpy(out, &counters, std::min(size, sizeof(counters)));
}

extern "C" uint64_t sluice_fake_thread_driver_ns(void) { return api::t_driver_ns; }

extern "C" void sluice_fake_reset(void) {
  guarded(
      [&] {
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        drv.trace.clear();
        drv.injections.clear();
#define SLUICE_FAKE_ZERO_COUNTER(name) drv.counters.name.store(0);
        SLUICE_FAKE_COUNTERS(SLUICE_FAKE_ZERO_COUNTER)
#undef SLUICE_FAKE_ZERO_COUNTER
        return 0;
      },
      0);
}

extern "C" int sluice_fake_wait_idle(uint64_t timeout_ns) {
  return guarded(
      [&] {
        Driver& drv = driver();
        std::unique_lock lock(drv.mu);
        if (timeout_ns == 0) {
          drv.changed.wait(lock, [&] { return all_idle(drv); });
          return 0;
        }
        return drv.changed.wait_for(lock, std::chrono::nanoseconds(timeout_ns), [&] { return all_idle(drv); }) ? 0 : -1;
      },
      -1);
}

extern "C" int sluice_fake_device_is_shared(int ordinal) {
  return guarded(
      [&] {
        Driver& drv = driver();
        std::lock_guard lock(drv.mu);
        Device* device = device_at(drv, ordinal);
        if (!drv.initialized.load() || device == nullptr) return -1;
        return device->board->shared() ? 1 : 0;
      },
      -1);
}
