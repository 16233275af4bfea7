// One fmt-based logger for every sluice binary and for the shim. It writes single lines to stderr
// with write(2), never allocates on the disabled path, and never throws.
//
// The level comes from SLUICE_LOG (error, warn, info, debug, trace; default warn). Hot paths use
// SLUICE_LOG_ONCE or SLUICE_LOG_EVERY so a repeated condition costs one line, not a flood.
//
// Thread safety: every function may be called from any thread.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <string_view>

namespace sluice::log {

enum class Level : int { error = 0, warn = 1, info = 2, debug = 3, trace = 4 };

// The active level. Reads SLUICE_LOG on first use.
Level level() noexcept;
void set_level(Level level) noexcept;
bool enabled(Level level) noexcept;

// The component name printed in front of each line ("sluice", "sluiced", ...).
void set_component(std::string_view name) noexcept;

// Writes one line at `level` (no check of the active level).
void write(Level level, std::string_view message) noexcept;

// Parses a level name; returns false for an unknown name.
bool parse_level(std::string_view name, Level& out) noexcept;

template <typename... Args>
void emit(Level lvl, fmt::format_string<Args...> format, Args&&... args) noexcept {
  if (!enabled(lvl)) return;
  try {
    fmt::memory_buffer buffer;
    fmt::format_to(std::back_inserter(buffer), format, std::forward<Args>(args)...);
    write(lvl, std::string_view(buffer.data(), buffer.size()));
  } catch (...) {
    write(lvl, "(log message could not be formatted)");
  }
}

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... a) noexcept { emit(Level::error, f, std::forward<Args>(a)...); }
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) noexcept { emit(Level::warn, f, std::forward<Args>(a)...); }
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... a) noexcept { emit(Level::info, f, std::forward<Args>(a)...); }
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) noexcept { emit(Level::debug, f, std::forward<Args>(a)...); }
template <typename... Args>
void trace(fmt::format_string<Args...> f, Args&&... a) noexcept { emit(Level::trace, f, std::forward<Args>(a)...); }

// Admits one call per `interval_ns` per limiter; cheap when it refuses.
class RateLimit {
 public:
  explicit constexpr RateLimit(std::uint64_t interval_ns) : interval_ns_(interval_ns) {}
  bool admit() noexcept;

 private:
  std::uint64_t interval_ns_;
  std::atomic<std::uint64_t> next_ns_{0};
};

}  // namespace sluice::log

// Logs the first time this call site is reached, then never again.
#define SLUICE_LOG_ONCE(lvl, ...)                                           \
  do {                                                                      \
    static std::atomic<bool> sluice_logged_once_{false};                    \
    if (!sluice_logged_once_.exchange(true, std::memory_order_relaxed))     \
      ::sluice::log::emit(::sluice::log::Level::lvl, __VA_ARGS__);          \
  } while (0)

// Logs at most once per second from this call site.
#define SLUICE_LOG_EVERY_SECOND(lvl, ...)                                   \
  do {                                                                      \
    static ::sluice::log::RateLimit sluice_rate_limit_{1000000000ull};      \
    if (::sluice::log::enabled(::sluice::log::Level::lvl) &&                \
        sluice_rate_limit_.admit())                                         \
      ::sluice::log::emit(::sluice::log::Level::lvl, __VA_ARGS__);          \
  } while (0)
