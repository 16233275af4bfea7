// The control protocol between sluicectl and sluiced: one JSON request per frame (wire.h) after a
// Hello with Role::control, one JSON reply per request.
//
//   {"cmd": "status"}                      daemon, devices, policy, counters
//   {"cmd": "ps"}                          one entry per client
//   {"cmd": "metrics"}                     {"text": Prometheus text format} (docs/operations.md)
//   {"cmd": "queue", "limit": N}           operations waiting in clients' queues now
//   {"cmd": "policy"}                      the policy in force, normalised
//   {"cmd": "reload"}                      reload the policy file (as SIGHUP)
//   {"cmd": "set-class", "pid": P, "class": "rt" | "be" | "be:N" | "policy"}
//   {"cmd": "client-env"}                  environment a client sets before its driver starts
//                                          (CUDA_MPS_PIPE_DIRECTORY in mps mode)
//
// Replies: {"ok": true, ...} or {"ok": false, "code": <one of kCode*>, "error": "..."}.
// reload and set-class need the daemon's uid or root; a client's owner may only lower it.
#pragma once

namespace sluice::sched::control {

inline constexpr const char* kCodePermission = "permission";
inline constexpr const char* kCodeBadRequest = "bad_request";
inline constexpr const char* kCodeNotFound = "not_found";
inline constexpr const char* kCodeFailed = "failed";

}  // namespace sluice::sched::control
