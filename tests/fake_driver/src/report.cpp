// SLUICE_FAKE_REPORT: the process's counters as one JSON object, written when the process exits
// normally, so that tests can account for the work of programs they do not control (work
// submitted = executed + failed + pending; pending is work still queued at exit).
#include "report.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "driver.h"
#include "sluice/common/log.h"

namespace sluice::fake {
namespace {

std::string g_report_path;  // set once, at the first cuInit that asks for a report

std::string expand_pid(const std::string& pattern) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == 'p') {
      out += std::to_string(getpid());
      ++i;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

void write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

void write_report_at_exit() noexcept {
  try {
    const std::string path = expand_pid(g_report_path);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      log::warn("fake driver: SLUICE_FAKE_REPORT: cannot write {}", path);
      return;
    }
    write_all(fd, counters_json(driver()));
    ::close(fd);
  } catch (...) {
    // The report is a test aid; exit goes on without it.
  }
}

}  // namespace

std::string counters_json(Driver& drv) {
  const Counters& c = drv.counters;
  std::string json = "{\"pid\": " + std::to_string(getpid());
#define SLUICE_FAKE_REPORT_FIELD(name) json += ", \"" #name "\": " + std::to_string(c.name.load());
  SLUICE_FAKE_COUNTERS(SLUICE_FAKE_REPORT_FIELD)
#undef SLUICE_FAKE_REPORT_FIELD
  auto pending = [](const auto& submitted, const auto& executed, const auto& failed) {
    const std::uint64_t s = submitted.load(), done = executed.load() + failed.load();
    return std::to_string(s > done ? s - done : 0);
  };
  json += ", \"launches_pending\": " + pending(c.launches_submitted, c.launches_executed, c.launches_failed);
  json += ", \"copies_pending\": " + pending(c.copies_submitted, c.copies_executed, c.copies_failed);
  json += ", \"memsets_pending\": " + pending(c.memsets_submitted, c.memsets_executed, c.memsets_failed);
  json += "}\n";
  return json;
}

void arm_exit_report(const Config& config) {
  if (config.report.empty() || !g_report_path.empty()) return;
  g_report_path = config.report;
  std::atexit(write_report_at_exit);
}

}  // namespace sluice::fake
