#include "sluice/shim/gate.h"

namespace sluice::shim {

const char* op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kernel:
      return "kernel";
    case OpKind::copy:
      return "copy";
    case OpKind::memset:
      return "memset";
    case OpKind::event_record:
      return "event_record";
    case OpKind::event_wait:
      return "event_wait";
    case OpKind::host_fn:
      return "host_fn";
    case OpKind::mem_op:
      return "mem_op";
    case OpKind::mem_free:
      return "mem_free";
    case OpKind::graph:
      return "graph";
    case OpKind::prefetch:
      return "prefetch";
    case OpKind::kCount:
      break;
  }
  return "unknown";
}

}  // namespace sluice::shim
