#include "probe.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <filesystem>

#include <fmt/ranges.h>

#include "sluice/common/clock.h"
#include "sluice_trace.h"
#include "sluice_trace.skel.h"

namespace sluice::trace {

namespace {

// libbpf's own messages; the last warning goes into a failure's message.
std::string g_libbpf_last;

__attribute__((format(printf, 2, 0))) int collect_libbpf(enum libbpf_print_level level, const char* format,
                                                       va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char text[512];
  int n = std::vsnprintf(text, sizeof(text), format, args);
  g_libbpf_last.assign(text);
  while (!g_libbpf_last.empty() && g_libbpf_last.back() == '\n') g_libbpf_last.pop_back();
  return n;
}

bool has_capability(const __user_cap_data_struct (&caps)[2], int cap) {
  return (caps[cap / 32].effective & (1u << (cap % 32))) != 0;
}

// Loading BPF and attaching uprobes needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN, or root).
std::optional<Failure> check_privileges() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct caps[2]{};
  if (syscall(SYS_capget, &header, caps) != 0) return std::nullopt;  // let the kernel decide
  bool admin = has_capability(caps, CAP_SYS_ADMIN);
#if defined(CAP_BPF) && defined(CAP_PERFMON)
  bool bpf_perfmon = has_capability(caps, CAP_BPF) && has_capability(caps, CAP_PERFMON);
#else
  bool bpf_perfmon = false;
#endif
  if (admin || bpf_perfmon) return std::nullopt;
  return Failure{FailureCause::permission,
                 fmt::format("not permitted: tracing needs root, or CAP_BPF and CAP_PERFMON (running as uid {} "
                             "without them)",
                             geteuid())};
}

std::optional<Failure> check_kernel() {
  std::error_code ec;
  if (!std::filesystem::exists("/sys/bus/event_source/devices/uprobe/type", ec)) {
    return Failure{FailureCause::unsupported,
                   "the kernel has no uprobe events (/sys/bus/event_source/devices/uprobe is missing; "
                   "CONFIG_UPROBE_EVENTS)"};
  }
  return std::nullopt;
}

Failure bpf_failure(const char* what, int error) {
  std::string detail = g_libbpf_last.empty() ? std::string() : fmt::format(" (libbpf: {})", g_libbpf_last);
  if (error == EPERM || error == EACCES) {
    return {FailureCause::permission,
            fmt::format("{}: {}: the kernel refused (kernel.unprivileged_bpf_disabled, lockdown, or a "
                        "container's seccomp policy){}",
                        what, std::strerror(error), detail)};
  }
  if (error == ENOSYS || error == EOPNOTSUPP || error == EINVAL || error == ENOENT) {
    return {FailureCause::unsupported,
            fmt::format("{}: {}: the kernel lacks the BPF or uprobe support sluice-trace needs{}", what,
                        std::strerror(error), detail)};
  }
  return {FailureCause::failed, fmt::format("{}: {}{}", what, std::strerror(error), detail)};
}

}  // namespace

struct Probe::State {
  std::string driver;
  sluice_trace* skeleton = nullptr;
  std::vector<bpf_link*> links;
  std::vector<std::string> skipped;  // why each entry point that is not probed was skipped
  std::uint64_t attached_ns = 0;

  ~State() {
    for (bpf_link* link : links) bpf_link__destroy(link);
    if (skeleton != nullptr) sluice_trace::destroy(skeleton);
  }
};

Probe::Probe(std::unique_ptr<State> state) : state_(std::move(state)) {}
Probe::~Probe() = default;

std::unique_ptr<Probe> Probe::attach(const std::string& driver, const std::vector<DriverSymbol>& symbols,
                                     Failure& failure) {
  if (auto problem = check_privileges()) {
    failure = *problem;
    return nullptr;
  }
  if (auto problem = check_kernel()) {
    failure = *problem;
    return nullptr;
  }
  libbpf_set_print(collect_libbpf);
  auto state = std::make_unique<State>();
  state->driver = driver;
  state->skeleton = sluice_trace::open_and_load();
  if (state->skeleton == nullptr) {
    failure = bpf_failure("loading the BPF program", errno);
    return nullptr;
  }
  std::size_t launch_probes = 0;
  for (const DriverSymbol& symbol : symbols) {
    bpf_program* program = symbol.kind == EntryKind::launch ? state->skeleton->progs.count_launch
                                                            : state->skeleton->progs.count_copy;
    bpf_link* link = bpf_program__attach_uprobe(program, false, -1, driver.c_str(), symbol.offset);
    if (link == nullptr) {
      // One function the kernel cannot probe (an instruction uprobes cannot step over, say) is
      // skipped; a refusal that would hit every probe ends the attempt.
      Failure why = bpf_failure(fmt::format("{}: attaching a uprobe to {} (offset {:#x})", driver, symbol.name,
                                            symbol.offset).c_str(), errno);
      if (why.cause == FailureCause::permission || state->links.empty()) {
        failure = why;
        return nullptr;
      }
      state->skipped.push_back(why.message);
      continue;
    }
    state->links.push_back(link);
    if (symbol.kind == EntryKind::launch) ++launch_probes;
  }
  if (launch_probes == 0) {
    failure = {FailureCause::failed, fmt::format("{}: no launch entry point could be probed: {}", driver,
                                                 fmt::join(state->skipped, "; "))};
    return nullptr;
  }
  state->attached_ns = now_ns();
  return std::unique_ptr<Probe>(new Probe(std::move(state)));
}

const std::vector<std::string>& Probe::skipped() const { return state_->skipped; }

Snapshot Probe::read() const {
  Snapshot snapshot;
  snapshot.driver = state_->driver;
  snapshot.probes = state_->links.size();
  snapshot.elapsed_s = static_cast<double>(now_ns() - state_->attached_ns) / 1e9;
  int counts_fd = bpf_map__fd(state_->skeleton->maps.counts);
  std::uint32_t key = 0, next = 0;
  const std::uint32_t* previous = nullptr;
  while (bpf_map_get_next_key(counts_fd, previous, &next) == 0) {
    sluice_trace_counts value{};
    if (bpf_map_lookup_elem(counts_fd, &next, &value) == 0) {
      ProcessCounts p;
      p.pid = next;
      p.comm.assign(value.comm, strnlen(value.comm, sizeof(value.comm)));
      p.launches = value.launches;
      p.copies = value.copies;
      snapshot.processes.push_back(std::move(p));
    }
    key = next;
    previous = &key;
  }
  std::uint32_t zero = 0;
  std::uint64_t lost = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(state_->skeleton->maps.lost), &zero, &lost) == 0) snapshot.lost = lost;
  sort_processes(snapshot.processes);
  return snapshot;
}

}  // namespace sluice::trace
