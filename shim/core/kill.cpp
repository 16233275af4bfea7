// Kill options and the on-disk cache of twin modules (sluice/shim/kill.h).
#include "sluice/shim/kill.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>

#include "sluice/common/env.h"
#include "sluice/common/log.h"

namespace sluice::shim {
namespace {

constexpr std::string_view kMagic = "sluice-twin v1";

std::string default_cache_dir() {
  if (auto xdg = env::get("XDG_CACHE_HOME"); xdg && !xdg->empty() && xdg->front() == '/')
    return *xdg + "/sluice/twins";
  if (auto home = env::get("HOME"); home && !home->empty()) return *home + "/.cache/sluice/twins";
  return {};
}

bool make_dir(const std::string& path, mode_t mode) {
  if (mkdir(path.c_str(), mode) == 0) return true;
  if (errno != EEXIST) return false;
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Creates `dir` and any missing parent; the leaf (sluice/twins) and its parent get 0700.
bool make_dirs(const std::string& dir) {
  for (std::size_t slash = dir.find('/', 1); slash != std::string::npos;
       slash = dir.find('/', slash + 1)) {
    if (!make_dir(dir.substr(0, slash), 0700)) return false;
  }
  return make_dir(dir, 0700);
}

bool parse_u32(std::string_view text, std::uint32_t& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{} && end == text.data() + text.size();
}

// The next line of `text` from `pos` (without its newline); false at the end.
bool next_line(std::string_view text, std::size_t& pos, std::string_view& line) {
  if (pos >= text.size()) return false;
  std::size_t end = text.find('\n', pos);
  if (end == std::string_view::npos) return false;  // every line of the header ends in a newline
  line = text.substr(pos, end - pos);
  pos = end + 1;
  return true;
}

}  // namespace

KillOptions kill_options_from_environment() {
  KillOptions options;
  auto enabled = env::get_bool("SLUICE_KILL", false);
  if (enabled) {
    options.enabled = *enabled;
  } else {
    log::warn("{}; kill stays off", enabled.error().message);
  }
  auto min_us = env::get_u64("SLUICE_KILL_MIN_US", options.min_ns / 1000);
  if (min_us) {
    options.min_ns = *min_us * 1000;
  } else {
    log::warn("{}; using {} us", min_us.error().message, options.min_ns / 1000);
  }
  options.cache_dir = default_cache_dir();
  return options;
}

std::string twin_cache_path(const std::string& dir, std::string_view key) {
  std::string name(key);
  for (char& c : name) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '_' || c == '-';
    if (!plain) c = '_';
  }
  return dir + "/" + name + ".twin";
}

// sluice-twin v1 <key>
// kernel <name> <launch_param_offset> <twin_param_bytes>      (one per instrumented entry)
// ptx <bytes>
// <the PTX, exactly <bytes> bytes>
std::string serialize_twin(const TwinModule& twin) {
  std::ostringstream out;
  out << kMagic << ' ' << twin.key << '\n';
  for (const TwinKernel& k : twin.kernels)
    out << "kernel " << k.name << ' ' << k.launch_param_offset << ' ' << k.twin_param_bytes << '\n';
  out << "ptx " << twin.ptx.size() << '\n' << twin.ptx;
  return out.str();
}

std::optional<TwinModule> parse_twin(std::string_view text, std::string_view key) {
  std::size_t pos = 0;
  std::string_view line;
  if (!next_line(text, pos, line)) return std::nullopt;
  if (line.size() != kMagic.size() + 1 + key.size() || !line.starts_with(kMagic) ||
      line.substr(kMagic.size() + 1) != key) {
    return std::nullopt;
  }
  TwinModule twin;
  twin.key = std::string(key);
  while (next_line(text, pos, line)) {
    if (line.starts_with("ptx ")) {
      std::uint32_t bytes = 0;
      if (!parse_u32(line.substr(4), bytes) || text.size() - pos != bytes) return std::nullopt;
      twin.ptx = std::string(text.substr(pos));
      return twin;
    }
    if (!line.starts_with("kernel ")) return std::nullopt;
    std::string_view rest = line.substr(7);
    const std::size_t a = rest.find(' ');
    const std::size_t b = a == std::string_view::npos ? a : rest.find(' ', a + 1);
    if (a == 0 || b == std::string_view::npos) return std::nullopt;
    TwinKernel kernel;
    kernel.name = std::string(rest.substr(0, a));
    if (!parse_u32(rest.substr(a + 1, b - a - 1), kernel.launch_param_offset) ||
        !parse_u32(rest.substr(b + 1), kernel.twin_param_bytes) ||
        kernel.launch_param_offset + 8 > kernel.twin_param_bytes) {
      return std::nullopt;
    }
    twin.kernels.push_back(std::move(kernel));
  }
  return std::nullopt;
}

std::optional<TwinModule> load_cached_twin(const std::string& dir, const std::string& key) {
  if (dir.empty()) return std::nullopt;
  std::ifstream in(twin_cache_path(dir, key), std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return parse_twin(text.str(), key);
}

bool store_cached_twin(const std::string& dir, const TwinModule& twin) {
  if (dir.empty() || !make_dirs(dir)) return false;
  const std::string path = twin_cache_path(dir, twin.key);
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0) return false;
  const std::string text = serialize_twin(twin);
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  const bool ok = written == text.size() && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace sluice::shim
