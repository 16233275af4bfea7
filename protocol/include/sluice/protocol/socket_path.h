// Where sluiced listens, and where clients and sluicectl look for it.
//
//   sluiced:  $SLUICE_SOCKET, else /run/sluice/sluiced.sock when running as root, else
//             $XDG_RUNTIME_DIR/sluice/sluiced.sock. With none of these usable it refuses to start
//             and says which variable to set.
//   clients:  $SLUICE_SOCKET if set (and nothing else), else /run/sluice/sluiced.sock if it
//             exists (a system daemon), else $XDG_RUNTIME_DIR/sluice/sluiced.sock.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "sluice/common/result.h"

namespace sluice::protocol {

inline constexpr const char* kSystemSocket = "/run/sluice/sluiced.sock";
inline constexpr const char* kSocketEnv = "SLUICE_SOCKET";

inline std::string user_socket_path() {
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime == nullptr || runtime[0] != '/') return {};
  return std::string(runtime) + "/sluice/sluiced.sock";
}

inline Result<std::string> daemon_socket_path() {
  if (const char* explicit_path = std::getenv(kSocketEnv); explicit_path != nullptr && explicit_path[0] != '\0') {
    return std::string(explicit_path);
  }
  if (geteuid() == 0) return std::string(kSystemSocket);
  std::string user = user_socket_path();
  if (user.empty()) {
    return make_error("no socket path: not root (so not {}), and XDG_RUNTIME_DIR is unset; "
                      "set SLUICE_SOCKET=/path/to/sluiced.sock or pass --socket", kSystemSocket);
  }
  return user;
}

inline std::vector<std::string> client_socket_paths() {
  if (const char* explicit_path = std::getenv(kSocketEnv); explicit_path != nullptr && explicit_path[0] != '\0') {
    return {explicit_path};
  }
  std::vector<std::string> paths;
  struct stat st {};
  if (stat(kSystemSocket, &st) == 0) paths.emplace_back(kSystemSocket);
  if (std::string user = user_socket_path(); !user.empty()) paths.push_back(user);
  if (paths.empty()) paths.emplace_back(kSystemSocket);  // named in "not reachable" messages
  return paths;
}

}  // namespace sluice::protocol
