#include "identity.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace sluice::sched {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string trim_newline(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text;
}

// The cgroup v2 path ("0::/path"); on a v1-only host the first hierarchy's path.
std::string cgroup_of(const std::string& table) {
  std::istringstream lines(table);
  std::string line, fallback;
  while (std::getline(lines, line)) {
    if (line.starts_with("0::")) return line.substr(3);
    if (auto colon = line.find(':', line.find(':') + 1); fallback.empty() && colon != std::string::npos) {
      fallback = line.substr(colon + 1);
    }
  }
  return fallback;
}

}  // namespace

Result<PeerCredentials> peer_credentials(int socket_fd) {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    return make_error("SO_PEERCRED: {}", std::strerror(errno));
  }
  PeerCredentials peer{cred.pid, cred.uid, cred.gid, {}};
  // Supplementary groups as the kernel saw them at connect (for --admin-group). Without
  // SO_PEERGROUPS (kernels before 4.13) only the primary group counts.
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    socklen_t bytes = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(socket_fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &bytes) == 0) {
      groups.resize(bytes / sizeof(gid_t));
      peer.groups = std::move(groups);
      break;
    }
    if (errno != ERANGE) break;
    groups.resize(bytes / sizeof(gid_t) + 1);
  }
  return peer;
}

Result<ClientIdentity> read_identity(const PeerCredentials& peer) {
  ClientIdentity identity;
  identity.pid = static_cast<std::uint32_t>(peer.pid);
  identity.uid = peer.uid;
  identity.gid = peer.gid;
  std::string proc = fmt::format("/proc/{}", peer.pid);
  if (access(proc.c_str(), F_OK) != 0) return make_error("{}: the process is gone", proc);

  char target[4096];
  ssize_t length = readlink((proc + "/exe").c_str(), target, sizeof(target) - 1);
  if (length > 0) {
    std::string exe(target, static_cast<std::size_t>(length));
    if (exe.ends_with(" (deleted)")) exe.resize(exe.size() - 10);
    identity.exe = exe.substr(exe.rfind('/') + 1);
  } else {
    identity.exe = trim_newline(read_file(proc + "/comm"));  // another user's process
  }
  std::string cmdline = read_file(proc + "/cmdline");
  while (!cmdline.empty() && cmdline.back() == '\0') cmdline.pop_back();
  for (char& c : cmdline) {
    if (c == '\0') c = ' ';
  }
  identity.cmdline = std::move(cmdline);
  identity.cgroup = cgroup_of(read_file(proc + "/cgroup"));
  return identity;
}

}  // namespace sluice::sched
