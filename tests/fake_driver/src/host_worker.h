// The host worker: the one thread per process that runs host functions (cuLaunchHostFunc,
// cuStreamAddCallback) in the order they reach the head of their streams, as the real driver's
// callback thread does. A host function blocks its stream until it returns.
//
// Thread safety: post() is called under the driver lock; the worker takes the lock itself and
// runs host functions without it.
#pragma once

#include <condition_variable>
#include <deque>

#include "objects.h"

namespace sluice::fake {

struct Driver;

class HostWorker {
 public:
  explicit HostWorker(Driver& drv) : drv_(drv) {}
  void post(OpPtr op);

 private:
  void run();

  Driver& drv_;
  bool started_ = false;
  std::deque<OpPtr> queue_;
  std::condition_variable ready_;
};

// Marks `op` done with `result`: traces and counts it, records a failure in its context, and
// wakes waiters. Called under the driver lock.
void complete_op(Driver& drv, Op& op, CUresult result);

}  // namespace sluice::fake
