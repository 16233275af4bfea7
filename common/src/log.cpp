#include "sluice/common/log.h"

#include <strings.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "sluice/common/clock.h"

namespace sluice::log {
namespace {

constexpr std::array<std::string_view, 5> kLevelNames = {"error", "warn", "info", "debug", "trace"};

// -1 means "not read from SLUICE_LOG yet".
std::atomic<int> g_level{-1};
std::array<char, 32> g_component = {'s', 'l', 'u', 'i', 'c', 'e', '\0'};

int read_level_from_env() noexcept {
  Level parsed = Level::warn;
  const char* value = std::getenv("SLUICE_LOG");
  if (value != nullptr && !parse_level(value, parsed)) {
    parsed = Level::warn;
    static const char kMsg[] = "sluice: SLUICE_LOG: unknown level, using 'warn'\n";
    (void)!::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
  }
  return static_cast<int>(parsed);
}

}  // namespace

bool parse_level(std::string_view name, Level& out) noexcept {
  for (std::size_t i = 0; i < kLevelNames.size(); ++i) {
    if (name.size() == kLevelNames[i].size() &&
        strncasecmp(name.data(), kLevelNames[i].data(), name.size()) == 0) {
      out = static_cast<Level>(i);
      return true;
    }
  }
  if (name == "warning") {
    out = Level::warn;
    return true;
  }
  return false;
}

Level level() noexcept {
  int current = g_level.load(std::memory_order_relaxed);
  if (current < 0) {
    current = read_level_from_env();
    g_level.store(current, std::memory_order_relaxed);
  }
  return static_cast<Level>(current);
}

void set_level(Level lvl) noexcept { g_level.store(static_cast<int>(lvl), std::memory_order_relaxed); }

bool enabled(Level lvl) noexcept { return static_cast<int>(lvl) <= static_cast<int>(level()); }

void set_component(std::string_view name) noexcept {
  std::size_t n = std::min(name.size(), g_component.size() - 1);
  std::memcpy(g_component.data(), name.data(), n);
  g_component[n] = '\0';
}

void write(Level lvl, std::string_view message) noexcept {
  // One write(2) per line so lines from several processes do not interleave.
  std::array<char, 1024> line{};
  int n = std::snprintf(line.data(), line.size(), "%s[%d] %s: ", g_component.data(),
                        static_cast<int>(getpid()),
                        kLevelNames[static_cast<std::size_t>(lvl)].data());
  if (n < 0) return;
  std::size_t used = static_cast<std::size_t>(n);
  std::size_t room = line.size() - used - 1;
  std::size_t take = std::min(room, message.size());
  std::memcpy(line.data() + used, message.data(), take);
  used += take;
  line[used++] = '\n';
  (void)!::write(STDERR_FILENO, line.data(), used);
}

bool RateLimit::admit() noexcept {
  std::uint64_t now = now_ns();
  std::uint64_t next = next_ns_.load(std::memory_order_relaxed);
  if (now < next) return false;
  return next_ns_.compare_exchange_strong(next, now + interval_ns_, std::memory_order_relaxed);
}

}  // namespace sluice::log
