// Launch-relevant state of kernels (function attributes, cache and shared-memory configuration) as
// stream-ordered state: a change waits for the held launches of its kernel that it could break.
//
// Why: the driver checks a launch against the function's state when the launch is submitted. cuDNN
// sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES before each launch; a held launch that asked
// for 51200 bytes fails with CUDA_ERROR_INVALID_VALUE if a later call lowered the limit to 14336
// before the release thread submitted it.
#include <algorithm>

#include "engine_data.h"
#include "sluice/shim/engine.h"

namespace sluice::shim {
namespace {

using Change = Engine::FunctionChange;

bool same_slot(const Change& a, const Change& b) {
  return a.kind == b.kind && (a.kind != Change::Kind::attribute || a.attribute == b.attribute);
}

// The value a configuration was last given through sluice, if it was.
bool remembered_value(KernelRecord& record, const Change& change, int& value) {
  std::lock_guard lock(record.changes_mu);
  for (const Change& known : record.changes) {
    if (same_slot(known, change)) {
      value = known.value;
      return true;
    }
  }
  return false;
}

void remember(KernelRecord& record, const Change& change) {
  std::lock_guard lock(record.changes_mu);
  auto slot = std::find_if(record.changes.begin(), record.changes.end(),
                           [&](const Change& known) { return same_slot(known, change); });
  if (slot != record.changes.end()) record.changes.erase(slot);
  record.changes.push_back(change);
}

bool is_launch_of(const HeldOp& op, const KernelRecord* family[2]) {
  if (op.desc.kind != OpKind::kernel) return false;
  for (const KernelRecord* held : op.kernel_records) {
    if (held != nullptr && (held == family[0] || held == family[1])) return true;
  }
  return false;
}

}  // namespace

void Engine::count_held_launch(HeldOp& op) {
  KernelRecord* record = data_->kernels.find_or_insert(op.desc.func, [](KernelRecord&) {});
  op.kernel_records[0] = record;
  op.kernel_records[1] = record->kernel.load(std::memory_order_acquire);
  for (KernelRecord* counted : op.kernel_records) {
    if (counted != nullptr) counted->held_launches.fetch_add(1, std::memory_order_acq_rel);
  }
}

void Engine::function_of_kernel(CUfunction func, CUkernel kernel) {
  if (func == nullptr || kernel == nullptr || static_cast<void*>(func) == kernel) return;
  KernelRecord* of_kernel = data_->kernels.find_or_insert(kernel, [](KernelRecord&) {});
  data_->kernels.find_or_insert(func, [](KernelRecord&) {})->kernel.store(
      of_kernel, std::memory_order_release);
}

std::vector<Engine::FunctionChange> Engine::function_changes(CUfunction func) {
  std::vector<FunctionChange> out;
  KernelRecord* record = data_->kernels.find(func);
  if (record == nullptr) return out;
  for (KernelRecord* source : {record->kernel.load(std::memory_order_acquire), record}) {
    if (source == nullptr) continue;
    std::lock_guard lock(source->changes_mu);
    for (const FunctionChange& change : source->changes) {
      std::erase_if(out, [&](const FunctionChange& known) { return same_slot(known, change); });
      out.push_back(change);
    }
  }
  return out;
}

namespace {
// Runs the application's change; when it went through, the kernel's twin (if any) gets it too.
CUresult changed_with_twin(Twins* twins, CUfunction func, Engine::FunctionChange change,
                           FunctionRef<CUresult()> call) {
  const CUresult result = call();
  if (result == CUDA_SUCCESS && twins != nullptr) twins->function_changed(func, change);
  return result;
}
}  // namespace

CUresult Engine::change_function(CUfunction func, FunctionChange change,
                                 FunctionRef<CUresult()> call) {
  if (func == nullptr) return call();
  KernelRecord& record = *data_->kernels.find_or_insert(func, [](KernelRecord&) {});
  auto with_twin = [&] { return changed_with_twin(data_->twins.get(), func, change, call); };
  return change_state(record, change, [&](int& value) {
    return driver_.cuFuncGetAttribute != nullptr &&
           driver_.cuFuncGetAttribute(&value, static_cast<CUfunction_attribute>(change.attribute),
                                      func) == CUDA_SUCCESS;
  }, with_twin);
}

CUresult Engine::change_kernel(CUkernel kernel, CUdevice device, FunctionChange change,
                               FunctionRef<CUresult()> call) {
  if (kernel == nullptr) return call();
  KernelRecord& record = *data_->kernels.find_or_insert(kernel, [](KernelRecord&) {});
  // Launches may name the CUkernel itself: its twin takes the change too.
  auto with_twin = [&] {
    return changed_with_twin(data_->twins.get(), reinterpret_cast<CUfunction>(kernel), change, call);
  };
  return change_state(record, change, [&](int& value) {
    return driver_.cuKernelGetAttribute != nullptr &&
           driver_.cuKernelGetAttribute(&value, static_cast<CUfunction_attribute>(change.attribute),
                                        kernel, device) == CUDA_SUCCESS;
  }, with_twin);
}

CUresult Engine::change_state(KernelRecord& record, FunctionChange change,
                              FunctionRef<bool(int&)> current_value, FunctionRef<CUresult()> call) {
  // The launches that see this state: of this function or kernel, and of the kernel it belongs to.
  const KernelRecord* family[2] = {&record, record.kernel.load(std::memory_order_acquire)};
  bool held = false;
  for (const KernelRecord* member : family) {
    held |= member != nullptr && member->held_launches.load(std::memory_order_acquire) != 0;
  }
  bool waited = false;
  if (held) {
    // Where the held launches of the kernel sit, and the most shared memory one of them asks for.
    std::vector<Dependency> launches;
    std::uint32_t largest_shared = 0;
    for (StreamState* state : snapshot(*data_)) {
      std::lock_guard lock(state->mu);
      std::uint64_t position = state->submitted.load(std::memory_order_relaxed);
      Dependency last;
      for (const HeldOp& op : state->queue) {
        ++position;
        if (!is_launch_of(op, family)) continue;
        last = {state, position};
        largest_shared = std::max(largest_shared, op.desc.shared_mem);
      }
      if (last.state != nullptr) launches.push_back(last);
    }
    bool noticed = !launches.empty();
    if (noticed && change.kind == FunctionChange::Kind::attribute &&
        change.attribute == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
      // Only a launch that asked for more than the new limit fails.
      noticed = change.value < 0 || largest_shared > static_cast<std::uint32_t>(change.value);
    } else if (noticed) {
      int current = 0;
      const bool known = change.kind == FunctionChange::Kind::attribute
                             ? current_value(current)
                             : remembered_value(record, change, current);
      noticed = !known || current != change.value;
    }
    if (noticed) {
      waited = true;
      wait_until([&] {
        return std::all_of(launches.begin(), launches.end(), [](const Dependency& d) { return met(d); });
      });
    }
  }
  stats_.count_function_change(waited);
  const CUresult result = call();
  if (result == CUDA_SUCCESS) remember(record, change);
  return result;
}

}  // namespace sluice::shim
