// Modules, libraries and the functions in them (see module_image.h for the formats).
//
// Thread safety: everything here runs under the driver lock.
#pragma once

#include <memory>
#include <string_view>

#include "driver.h"
#include "objects.h"

namespace sluice::fake {

// What a launch names: a CUfunction of a module, or a CUkernel of a library passed as CUfunction.
struct LaunchTarget {
  std::shared_ptr<const KernelDesc> desc;
  const std::map<int, int>* attributes = nullptr;
  Function* function = nullptr;  // null for a CUkernel
  Kernel* kernel = nullptr;
};

CUresult resolve_launch_target(Driver& drv, CUfunction handle, LaunchTarget& out);

// The device address of the __sluice_kill_flag global of the module a launch of `target` runs
// from in the current context (a kill-instrumented twin), or 0.
std::uintptr_t kill_flag_address(Driver& drv, const LaunchTarget& target);

// The largest dynamic shared memory a launch of `target` may ask for.
unsigned max_dynamic_shared(const LaunchTarget& target);

}  // namespace sluice::fake
