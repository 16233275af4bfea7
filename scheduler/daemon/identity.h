// What sluiced learns about a connecting process from the kernel: credentials from SO_PEERCRED,
// executable, command line and cgroup from /proc. Never from the client's own messages.
#pragma once

#include <sys/types.h>

#include <vector>

#include "sluice/common/result.h"
#include "sluice/scheduler/policy.h"

namespace sluice::sched {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups at connect time (SO_PEERGROUPS); may be empty
};

Result<PeerCredentials> peer_credentials(int socket_fd);

// Reads /proc/PID. Fields that cannot be read (another user's exe link without privileges) fall
// back to what can (the comm name) or stay empty; only a vanished process is an error.
Result<ClientIdentity> read_identity(const PeerCredentials& peer);

}  // namespace sluice::sched
