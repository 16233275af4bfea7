// Streams: creation, queries, synchronization, event waits, host functions, stream memory
// operations and stream capture.
#include <algorithm>

#include "api.h"
#include "capture.h"
#include "executor.h"

namespace sluice::fake {
namespace {

constexpr int kGreatestPriority = -5;
constexpr int kLeastPriority = 0;

CUresult make_stream(Driver& drv, CUstream* out, unsigned flags, int priority) {
  if (out == nullptr || (flags & ~static_cast<unsigned>(CU_STREAM_NON_BLOCKING)) != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  Stream* stream = create_stream(drv, *ctx, flags, std::clamp(priority, kGreatestPriority, kLeastPriority), StreamRole::normal);
  *out = stream->handle();
  return CUDA_SUCCESS;
}

// Synchronize and query refuse a capturing stream (and invalidate its capture), and the legacy
// stream while a blocking stream of its context captures.
CUresult check_sync_allowed(Stream& stream) {
  if (capture_active(stream.capture)) {
    invalidate_capture(*stream.capture);
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  if (stream.role == StreamRole::legacy) return check_legacy_capture(*stream.ctx, true);
  return CUDA_SUCCESS;
}

CUresult wait_event(Driver& drv, Stream& stream, CUevent handle, unsigned flags) {
  if ((flags & ~static_cast<unsigned>(CU_EVENT_WAIT_EXTERNAL)) != 0) return CUDA_ERROR_INVALID_VALUE;
  Event* event = lookup<Event>(drv, handle, HandleKind::event);
  if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if ((flags & CU_EVENT_WAIT_EXTERNAL) != 0 && stream.capture) {
    // An explicit wait node: each launch of the graph waits for the event's latest record.
    OpSpec spec;
    spec.kind = SLUICE_FAKE_OP_EVENT_WAIT;
    spec.name = "event wait";
    spec.work = EventRecordWork{reinterpret_cast<std::uint64_t>(handle)};
    return capture_append(drv, stream, std::move(spec));
  }
  if (capture_active(event->capture) || stream.capture) return capture_wait_event(stream, *event);
  OpSpec spec;
  spec.kind = SLUICE_FAKE_OP_EVENT_WAIT;
  spec.name = "event wait";
  spec.tag = reinterpret_cast<std::uint64_t>(handle);
  OpPtr op;
  if (CUresult status = submit(drv, stream, std::move(spec), &op)) return status;
  if (op && event->record && event->record->state != OpState::done) op->deps.push_back(event->record);
  return CUDA_SUCCESS;
}

CUresult host_func(Driver& drv, Stream& stream, HostFuncWork work) {
  OpSpec spec;
  spec.kind = SLUICE_FAKE_OP_HOST_FUNC;
  spec.name = "host function";
  spec.tag = reinterpret_cast<std::uint64_t>(work.user);
  spec.work = work;
  return submit(drv, stream, std::move(spec));
}

// The word a stream memory operation writes or waits on. Memory the device cannot reach is an
// invalid value; a misaligned word is an operation the device does not support: the H200 run of
// the conformance check (bench/results/fake_driver_conformance_h200.txt) answered
// CUDA_ERROR_NOT_SUPPORTED for cuStreamWaitValue32 on pinned memory + 1. Only that wait was
// measured; writes and 64-bit words are taken to fail the same way.
CUresult check_memop_address(Driver& drv, CUdeviceptr address, bool wide) {
  const std::size_t bytes = wide ? 8 : 4;
  if (!device_accessible(drv, address, bytes)) return CUDA_ERROR_INVALID_VALUE;
  if (address % bytes != 0) return CUDA_ERROR_NOT_SUPPORTED;
  return CUDA_SUCCESS;
}

CUresult mem_write(Driver& drv, Stream& stream, CUdeviceptr address, std::uint64_t value, bool wide, unsigned flags) {
  if (flags > CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult status = check_memop_address(drv, address, wide)) return status;
  OpSpec spec;
  spec.kind = SLUICE_FAKE_OP_MEM_WRITE;
  spec.name = wide ? "write value 64" : "write value 32";
  spec.tag = value;
  spec.work = MemWriteWork{address, value, wide};
  return submit(drv, stream, std::move(spec));
}

CUresult mem_wait(Driver& drv, Stream& stream, CUdeviceptr address, std::uint64_t value, bool wide, unsigned flags) {
  const unsigned condition = flags & ~static_cast<unsigned>(CU_STREAM_WAIT_VALUE_FLUSH);
  if (condition > CU_STREAM_WAIT_VALUE_NOR) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult status = check_memop_address(drv, address, wide)) return status;
  OpSpec spec;
  spec.kind = SLUICE_FAKE_OP_MEM_WAIT;
  spec.name = wide ? "wait value 64" : "wait value 32";
  spec.tag = value;
  spec.work = MemWaitWork{address, value, wide, flags};
  return submit(drv, stream, std::move(spec));
}

CUresult batch_mem_op(Driver& drv, Stream& stream, unsigned count, CUstreamBatchMemOpParams* params, unsigned flags) {
  if (flags != 0 || (count > 0 && params == nullptr) || count > 256) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < count; ++i) {
    const CUstreamBatchMemOpParams& p = params[i];
    CUresult status = CUDA_SUCCESS;
    switch (p.operation) {
      case CU_STREAM_MEM_OP_WAIT_VALUE_32:
        status = mem_wait(drv, stream, p.waitValue.address, p.waitValue.value, false, p.waitValue.flags);
        break;
      case CU_STREAM_MEM_OP_WAIT_VALUE_64:
        status = mem_wait(drv, stream, p.waitValue.address, p.waitValue.value64, true, p.waitValue.flags);
        break;
      case CU_STREAM_MEM_OP_WRITE_VALUE_32:
        status = mem_write(drv, stream, p.writeValue.address, p.writeValue.value, false, p.writeValue.flags);
        break;
      case CU_STREAM_MEM_OP_WRITE_VALUE_64:
        status = mem_write(drv, stream, p.writeValue.address, p.writeValue.value64, true, p.writeValue.flags);
        break;
      case CU_STREAM_MEM_OP_FLUSH_REMOTE_WRITES:
      case CU_STREAM_MEM_OP_BARRIER:
        break;  // memory is coherent in the fake
      default:
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (status != CUDA_SUCCESS) return status;
  }
  return CUDA_SUCCESS;
}

CUresult begin(Driver& drv, StreamArg arg, CUstreamCaptureMode mode, CUgraph graph) {
  return api::on_stream(drv, arg, [&](Stream& stream, auto&) {
    Graph* into = nullptr;
    if (graph != nullptr) {
      into = lookup<Graph>(drv, graph, HandleKind::graph);
      if (into == nullptr) return CUDA_ERROR_INVALID_VALUE;
    }
    return begin_capture(drv, stream, mode, into);
  });
}

CUresult capture_info(Driver& drv, StreamArg arg, CUstreamCaptureStatus* status, cuuint64_t* id, CUgraph* graph,
                      const CUgraphNode** deps, const CUgraphEdgeData** edges, size_t* count) {
  if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, arg, [&](Stream& stream, auto&) {
    if (stream.role == StreamRole::legacy && check_legacy_capture(*stream.ctx, false) != CUDA_SUCCESS) {
      return CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
    }
    if (!stream.capture) {
      *status = CU_STREAM_CAPTURE_STATUS_NONE;
      return CUDA_SUCCESS;
    }
    Capture& capture = *stream.capture;
    *status = capture.invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    if (id != nullptr) *id = capture.id;
    if (graph != nullptr) *graph = to_handle<Graph, CUgraph>(capture.graph);
    stream.capture_deps_out.clear();
    for (GraphNode* node : stream.capture_deps) stream.capture_deps_out.push_back(to_handle<GraphNode, CUgraphNode>(node));
    if (deps != nullptr) *deps = stream.capture_deps_out.data();
    stream.capture_edges_out.assign(stream.capture_deps_out.size(), CUgraphEdgeData{});
    if (edges != nullptr) *edges = stream.capture_edges_out.data();
    if (count != nullptr) *count = stream.capture_deps_out.size();
    return CUDA_SUCCESS;
  });
}

CUresult update_capture_deps(Driver& drv, StreamArg arg, CUgraphNode* deps, size_t count, unsigned flags) {
  if (count > 0 && deps == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (flags > CU_STREAM_SET_CAPTURE_DEPENDENCIES) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, arg, [&](Stream& stream, auto&) {
    if (!stream.capture) return CUDA_ERROR_ILLEGAL_STATE;
    std::vector<GraphNode*> nodes;
    for (size_t i = 0; i < count; ++i) {
      auto* node = lookup<GraphNode>(drv, deps[i], HandleKind::graph_node);
      if (node == nullptr || node->graph != stream.capture->graph) return CUDA_ERROR_INVALID_VALUE;
      nodes.push_back(node);
    }
    if (flags == CU_STREAM_SET_CAPTURE_DEPENDENCIES) stream.capture_deps.clear();
    for (GraphNode* node : nodes) {
      if (std::find(stream.capture_deps.begin(), stream.capture_deps.end(), node) == stream.capture_deps.end()) {
        stream.capture_deps.push_back(node);
      }
    }
    return CUDA_SUCCESS;
  });
}

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

FAKE_ENTRY(cuStreamCreate, (CUstream * phStream, unsigned int Flags), { return make_stream(drv, phStream, Flags, 0); })

FAKE_ENTRY(cuStreamCreateWithPriority, (CUstream * phStream, unsigned int flags, int priority),
           { return make_stream(drv, phStream, flags, priority); })

FAKE_ENTRY_TWO_ABIS(cuStreamDestroy_v2, cuStreamDestroy, (CUstream hStream), {
  std::lock_guard lock(drv.mu);
  Stream* stream = lookup<Stream>(drv, hStream, HandleKind::stream);
  if (stream == nullptr || stream->destroyed) return CUDA_ERROR_INVALID_HANDLE;
  if (stream->capture) {
    invalidate_capture(*stream->capture);
    stream->capture->streams.erase(stream);
    stream->capture.reset();
  }
  unregister_handle(drv, stream);
  stream->destroyed = true;
  if (!stream->busy) {  // nothing left to run: delete now, else the executor does once it drains
    auto& streams = stream->ctx->streams;
    streams.erase(std::remove(streams.begin(), streams.end(), stream), streams.end());
    delete stream;
  }
  return CUDA_SUCCESS;
})

FAKE_STREAM_ENTRY(cuStreamGetPriority, (CUstream hStream, int* priority), {
  if (priority == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    *priority = stream.priority;
    return CUDA_SUCCESS;
  });
})

FAKE_STREAM_ENTRY(cuStreamGetFlags, (CUstream hStream, unsigned int* flags), {
  if (flags == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    *flags = stream.flags;
    return CUDA_SUCCESS;
  });
})

FAKE_STREAM_ENTRY(cuStreamGetId, (CUstream hStream, unsigned long long* streamId), {
  if (streamId == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    *streamId = stream.id;
    return CUDA_SUCCESS;
  });
})

FAKE_STREAM_ENTRY(cuStreamGetDevice, (CUstream hStream, CUdevice* device), {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    *device = stream.ctx->device->ordinal;
    return CUDA_SUCCESS;
  });
})

FAKE_STREAM_ENTRY(cuStreamGetCtx, (CUstream hStream, CUcontext* pctx), {
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    *pctx = to_handle<Context, CUcontext>(stream.ctx);
    return CUDA_SUCCESS;
  });
})

FAKE_STREAM_ENTRY(cuStreamGetCtx_v2, (CUstream hStream, CUcontext* pCtx, CUgreenCtx* pGreenCtx), {
  if (pCtx == nullptr || pGreenCtx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    *pCtx = stream.ctx->green != nullptr ? nullptr : to_handle<Context, CUcontext>(stream.ctx);
    *pGreenCtx = to_handle<GreenCtx, CUgreenCtx>(stream.ctx->green);
    return CUDA_SUCCESS;
  });
})

FAKE_STREAM_ENTRY(cuStreamSynchronize, (CUstream hStream), {
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, std::unique_lock<std::mutex>& lock) {
    if (CUresult conflict = check_sync_allowed(stream)) return conflict;
    OpPtr last = stream.last;
    wait_for(drv, lock, last);
    return take_context_error(*stream.ctx);
  });
})

FAKE_STREAM_ENTRY(cuStreamQuery, (CUstream hStream), {
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    if (CUresult conflict = check_sync_allowed(stream)) return conflict;
    if (stream.last && stream.last->state != OpState::done) return CUDA_ERROR_NOT_READY;
    return take_context_error(*stream.ctx);
  });
})

FAKE_STREAM_ENTRY(cuStreamWaitEvent, (CUstream hStream, CUevent hEvent, unsigned int Flags), {
  return api::on_stream(drv, StreamArg{hStream, kZeroStream},
                        [&](Stream& stream, auto&) { return wait_event(drv, stream, hEvent, Flags); });
})

FAKE_STREAM_ENTRY(cuLaunchHostFunc, (CUstream hStream, CUhostFn fn, void* userData), {
  if (fn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    return host_func(drv, stream, HostFuncWork{fn, nullptr, nullptr, userData});
  });
})

FAKE_STREAM_ENTRY(cuStreamAddCallback, (CUstream hStream, CUstreamCallback callback, void* userData, unsigned int flags), {
  if (callback == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    return host_func(drv, stream, HostFuncWork{nullptr, callback, hStream, userData});
  });
})

FAKE_STREAM_ENTRY(cuStreamAttachMemAsync, (CUstream hStream, CUdeviceptr dptr, size_t length, unsigned int flags), {
  (void)length;
  if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST && flags != CU_MEM_ATTACH_SINGLE) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    if (classify(drv, dptr, 1) != PtrClass::managed) return CUDA_ERROR_INVALID_VALUE;
    OpSpec spec;
    spec.name = "attach memory";
    return submit(drv, stream, std::move(spec));
  });
})

// ---- stream memory operations -----------------------------------------------------------------

#define FAKE_MEMOP_ENTRIES(suffix)                                                                        \
  FAKE_STREAM_ENTRY(cuStreamWriteValue32##suffix, (CUstream stream, CUdeviceptr addr, cuuint32_t value, unsigned int flags), { \
    return api::on_stream(drv, StreamArg{stream, kZeroStream},                                             \
                          [&](Stream& s, auto&) { return mem_write(drv, s, addr, value, false, flags); }); \
  })                                                                                                       \
  FAKE_STREAM_ENTRY(cuStreamWriteValue64##suffix, (CUstream stream, CUdeviceptr addr, cuuint64_t value, unsigned int flags), { \
    return api::on_stream(drv, StreamArg{stream, kZeroStream},                                             \
                          [&](Stream& s, auto&) { return mem_write(drv, s, addr, value, true, flags); });  \
  })                                                                                                       \
  FAKE_STREAM_ENTRY(cuStreamWaitValue32##suffix, (CUstream stream, CUdeviceptr addr, cuuint32_t value, unsigned int flags), { \
    return api::on_stream(drv, StreamArg{stream, kZeroStream},                                             \
                          [&](Stream& s, auto&) { return mem_wait(drv, s, addr, value, false, flags); });  \
  })                                                                                                       \
  FAKE_STREAM_ENTRY(cuStreamWaitValue64##suffix, (CUstream stream, CUdeviceptr addr, cuuint64_t value, unsigned int flags), { \
    return api::on_stream(drv, StreamArg{stream, kZeroStream},                                             \
                          [&](Stream& s, auto&) { return mem_wait(drv, s, addr, value, true, flags); });   \
  })                                                                                                       \
  FAKE_STREAM_ENTRY(cuStreamBatchMemOp##suffix, (CUstream stream, unsigned int count, CUstreamBatchMemOpParams* paramArray, unsigned int flags), { \
    return api::on_stream(drv, StreamArg{stream, kZeroStream},                                             \
                          [&](Stream& s, auto&) { return batch_mem_op(drv, s, count, paramArray, flags); }); \
  })

// The _v2 ABI of CUDA 11.7 kept the signatures; both are the same operations.
FAKE_MEMOP_ENTRIES()
FAKE_MEMOP_ENTRIES(_v2)

// ---- capture ----------------------------------------------------------------------------------

FAKE_STREAM_ENTRY(cuStreamBeginCapture, (CUstream hStream),
                  { return begin(drv, StreamArg{hStream, kZeroStream}, CU_STREAM_CAPTURE_MODE_GLOBAL, nullptr); })

FAKE_STREAM_ENTRY(cuStreamBeginCapture_v2, (CUstream hStream, CUstreamCaptureMode mode),
                  { return begin(drv, StreamArg{hStream, kZeroStream}, mode, nullptr); })

FAKE_STREAM_ENTRY(cuStreamBeginCaptureToGraph, (CUstream hStream, CUgraph hGraph, const CUgraphNode* dependencies,
                                                const CUgraphEdgeData* dependencyData, size_t numDependencies, CUstreamCaptureMode mode), {
  (void)dependencyData;
  if (hGraph == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUresult status = begin(drv, StreamArg{hStream, kZeroStream}, mode, hGraph);
  if (status != CUDA_SUCCESS || dependencies == nullptr) return status;
  return update_capture_deps(drv, StreamArg{hStream, kZeroStream}, const_cast<CUgraphNode*>(dependencies), numDependencies,
                             CU_STREAM_SET_CAPTURE_DEPENDENCIES);
})

FAKE_STREAM_ENTRY(cuStreamEndCapture, (CUstream hStream, CUgraph* phGraph), {
  if (phGraph == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) { return end_capture(drv, stream, phGraph); });
})

FAKE_STREAM_ENTRY(cuStreamIsCapturing, (CUstream hStream, CUstreamCaptureStatus* captureStatus),
                  { return capture_info(drv, StreamArg{hStream, kZeroStream}, captureStatus, nullptr, nullptr, nullptr, nullptr, nullptr); })

FAKE_STREAM_ENTRY(cuStreamGetCaptureInfo, (CUstream hStream, CUstreamCaptureStatus* captureStatus_out, cuuint64_t* id_out), {
  return capture_info(drv, StreamArg{hStream, kZeroStream}, captureStatus_out, id_out, nullptr, nullptr, nullptr, nullptr);
})

FAKE_STREAM_ENTRY(cuStreamGetCaptureInfo_v2, (CUstream hStream, CUstreamCaptureStatus* captureStatus_out, cuuint64_t* id_out,
                                              CUgraph* graph_out, const CUgraphNode** dependencies_out, size_t* numDependencies_out), {
  return capture_info(drv, StreamArg{hStream, kZeroStream}, captureStatus_out, id_out, graph_out, dependencies_out, nullptr,
                      numDependencies_out);
})

FAKE_STREAM_ENTRY(cuStreamGetCaptureInfo_v3, (CUstream hStream, CUstreamCaptureStatus* captureStatus_out, cuuint64_t* id_out,
                                              CUgraph* graph_out, const CUgraphNode** dependencies_out,
                                              const CUgraphEdgeData** edgeData_out, size_t* numDependencies_out), {
  if (edgeData_out != nullptr && dependencies_out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return capture_info(drv, StreamArg{hStream, kZeroStream}, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out,
                      numDependencies_out);
})

FAKE_STREAM_ENTRY(cuStreamUpdateCaptureDependencies, (CUstream hStream, CUgraphNode* dependencies, size_t numDependencies, unsigned int flags),
                  { return update_capture_deps(drv, StreamArg{hStream, kZeroStream}, dependencies, numDependencies, flags); })

FAKE_STREAM_ENTRY(cuStreamUpdateCaptureDependencies_v2, (CUstream hStream, CUgraphNode* dependencies, const CUgraphEdgeData* dependencyData,
                                                         size_t numDependencies, unsigned int flags), {
  (void)dependencyData;
  return update_capture_deps(drv, StreamArg{hStream, kZeroStream}, dependencies, numDependencies, flags);
})

FAKE_ENTRY(cuThreadExchangeStreamCaptureMode, (CUstreamCaptureMode * mode), {
  if (mode == nullptr || *mode > CU_STREAM_CAPTURE_MODE_RELAXED) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  std::swap(thread_state(drv).capture_mode, *mode);
  return CUDA_SUCCESS;
})

// ---- attributes -------------------------------------------------------------------------------

FAKE_STREAM_ENTRY(cuStreamGetAttribute, (CUstream hStream, CUstreamAttrID attr, CUstreamAttrValue* value_out), {
  if (value_out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    *value_out = CUstreamAttrValue{};
    if (attr == CU_LAUNCH_ATTRIBUTE_PRIORITY) value_out->priority = stream.priority;
    return CUDA_SUCCESS;
  });
})

FAKE_STREAM_ENTRY(cuStreamSetAttribute, (CUstream hStream, CUstreamAttrID attr, const CUstreamAttrValue* value), {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    if (attr == CU_LAUNCH_ATTRIBUTE_PRIORITY) stream.priority = std::clamp(value->priority, kGreatestPriority, kLeastPriority);
    return CUDA_SUCCESS;
  });
})

FAKE_STREAM_ENTRY(cuStreamCopyAttributes, (CUstream dst, CUstream src), {
  std::lock_guard lock(drv.mu);
  Stream* to = nullptr;
  Stream* from = nullptr;
  if (CUresult status = resolve_stream(drv, StreamArg{dst, kZeroStream}, to)) return status;
  if (CUresult status = resolve_stream(drv, StreamArg{src, kZeroStream}, from)) return status;
  to->priority = from->priority;
  return CUDA_SUCCESS;
})
