// Events: record, wait (see api_stream.cpp), query, synchronize, elapsed time; context-wide
// records and waits (cuCtxRecordEvent, cuGreenCtxRecordEvent, ...).
#include "api.h"
#include "capture.h"
#include "executor.h"

namespace sluice::fake {
namespace {

constexpr unsigned kEventFlags = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;

OpSpec record_spec(CUevent handle) {
  OpSpec spec;
  spec.kind = SLUICE_FAKE_OP_EVENT_RECORD;
  spec.name = "event record";
  spec.tag = reinterpret_cast<std::uint64_t>(handle);
  spec.work = EventRecordWork{reinterpret_cast<std::uint64_t>(handle)};
  return spec;
}

CUresult record(Driver& drv, StreamArg arg, CUevent handle, unsigned flags) {
  if ((flags & ~static_cast<unsigned>(CU_EVENT_RECORD_EXTERNAL)) != 0) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, arg, [&](Stream& stream, auto&) {
    Event* event = lookup<Event>(drv, handle, HandleKind::event);
    if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (event->ctx->device != stream.ctx->device) return CUDA_ERROR_INVALID_HANDLE;
    if (stream.capture) {
      if ((flags & CU_EVENT_RECORD_EXTERNAL) != 0) return capture_append(drv, stream, record_spec(handle));
      return capture_event_record(stream, *event);
    }
    OpPtr op;
    if (CUresult status = submit(drv, stream, record_spec(handle), &op)) return status;
    event->record = op;
    event->capture.reset();
    event->capture_nodes.clear();
    return CUDA_SUCCESS;
  });
}

CUresult event_for_query(Driver& drv, CUevent handle, Event*& out) {
  out = lookup<Event>(drv, handle, HandleKind::event);
  if (out == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (capture_active(out->capture)) return CUDA_ERROR_CAPTURED_EVENT;
  return CUDA_SUCCESS;
}

CUresult elapsed_time(Driver& drv, float* ms, CUevent start, CUevent end) {
  if (ms == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Event* first = nullptr;
  Event* second = nullptr;
  if (CUresult status = event_for_query(drv, start, first)) return status;
  if (CUresult status = event_for_query(drv, end, second)) return status;
  if ((first->flags & CU_EVENT_DISABLE_TIMING) != 0 || (second->flags & CU_EVENT_DISABLE_TIMING) != 0) {
    return CUDA_ERROR_INVALID_HANDLE;
  }
  if (!first->record || !second->record) return CUDA_ERROR_INVALID_HANDLE;
  if (first->record->state != OpState::done || second->record->state != OpState::done) return CUDA_ERROR_NOT_READY;
  const auto delta = static_cast<double>(second->record->end_ns) - static_cast<double>(first->record->end_ns);
  *ms = static_cast<float>(delta / 1e6);
  return CUDA_SUCCESS;
}

// A context-wide record: an operation on a private non-blocking stream of the context that waits
// for the latest work of every other stream.
CUresult record_context(Driver& drv, Context& ctx, CUevent handle) {
  Event* event = lookup<Event>(drv, handle, HandleKind::event);
  if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  for (Stream* stream : ctx.streams) {
    if (capture_active(stream->capture)) {
      invalidate_capture(*stream->capture);
      return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
  }
  std::vector<OpPtr> latest;
  for (Stream* stream : ctx.streams) {
    if (stream->last && stream->last->state != OpState::done) latest.push_back(stream->last);
  }
  Stream* internal = create_stream(drv, ctx, CU_STREAM_NON_BLOCKING, 0, StreamRole::normal);
  unregister_handle(drv, internal);
  internal->destroyed = true;  // deleted by the executor once the record ran
  OpPtr op = enqueue_op(drv, *internal, record_spec(handle));
  op->deps.insert(op->deps.end(), latest.begin(), latest.end());
  event->record = op;
  event->capture.reset();
  return CUDA_SUCCESS;
}

// A context-wide wait: every stream the context has now waits for the event. Streams created
// later do not (the driver's version covers them too).
CUresult wait_context(Driver& drv, Context& ctx, CUevent handle) {
  Event* event = lookup<Event>(drv, handle, HandleKind::event);
  if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (capture_active(event->capture)) return CUDA_ERROR_CAPTURED_EVENT;
  if (!event->record || event->record->state == OpState::done) return CUDA_SUCCESS;
  for (Stream* stream : std::vector<Stream*>(ctx.streams)) {
    if (stream->destroyed || stream->capture) continue;
    OpSpec spec;
    spec.kind = SLUICE_FAKE_OP_EVENT_WAIT;
    spec.name = "event wait";
    spec.tag = reinterpret_cast<std::uint64_t>(handle);
    OpPtr op = enqueue_op(drv, *stream, std::move(spec));
    op->deps.push_back(event->record);
  }
  return CUDA_SUCCESS;
}

CUresult context_of_green(Driver& drv, CUgreenCtx handle, Context*& out) {
  auto* green = lookup<GreenCtx>(drv, handle, HandleKind::green_ctx);
  if (green == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  out = green->ctx;
  return out->sticky;
}

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

FAKE_ENTRY(cuEventCreate, (CUevent * phEvent, unsigned int Flags), {
  if (phEvent == nullptr || (Flags & ~kEventFlags) != 0) return CUDA_ERROR_INVALID_VALUE;
  if ((Flags & CU_EVENT_INTERPROCESS) != 0 && (Flags & CU_EVENT_DISABLE_TIMING) == 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  auto* event = new Event();
  event->ctx = ctx;
  event->flags = Flags;
  register_handle(drv, event);
  *phEvent = to_handle<Event, CUevent>(event);
  return CUDA_SUCCESS;
})

FAKE_ENTRY_TWO_ABIS(cuEventDestroy_v2, cuEventDestroy, (CUevent hEvent), {
  std::lock_guard lock(drv.mu);
  Event* event = lookup<Event>(drv, hEvent, HandleKind::event);
  if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  unregister_handle(drv, event);
  delete event;  // a pending record still runs: operations do not point back to their event
  return CUDA_SUCCESS;
})

FAKE_STREAM_ENTRY(cuEventRecord, (CUevent hEvent, CUstream hStream),
                  { return record(drv, StreamArg{hStream, kZeroStream}, hEvent, 0); })

FAKE_STREAM_ENTRY(cuEventRecordWithFlags, (CUevent hEvent, CUstream hStream, unsigned int flags),
                  { return record(drv, StreamArg{hStream, kZeroStream}, hEvent, flags); })

FAKE_ENTRY(cuEventQuery, (CUevent hEvent), {
  std::lock_guard lock(drv.mu);
  Event* event = nullptr;
  if (CUresult status = event_for_query(drv, hEvent, event)) return status;
  if (event->record && event->record->state != OpState::done) return CUDA_ERROR_NOT_READY;
  return take_context_error(*event->ctx);
})

FAKE_ENTRY(cuEventSynchronize, (CUevent hEvent), {
  std::unique_lock lock(drv.mu);
  Event* event = nullptr;
  if (CUresult status = event_for_query(drv, hEvent, event)) return status;
  Context* ctx = event->ctx;
  OpPtr record = event->record;
  wait_for(drv, lock, record);
  return take_context_error(*ctx);
})

FAKE_ENTRY(cuEventElapsedTime, (float* pMilliseconds, CUevent hStart, CUevent hEnd),
           { return elapsed_time(drv, pMilliseconds, hStart, hEnd); })

FAKE_ENTRY(cuEventElapsedTime_v2, (float* pMilliseconds, CUevent hStart, CUevent hEnd),
           { return elapsed_time(drv, pMilliseconds, hStart, hEnd); })

FAKE_ENTRY(cuCtxRecordEvent, (CUcontext hCtx, CUevent hEvent), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = context_from_handle(drv, hCtx, ctx)) return status;
  return record_context(drv, *ctx, hEvent);
})

FAKE_ENTRY(cuCtxWaitEvent, (CUcontext hCtx, CUevent hEvent), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = context_from_handle(drv, hCtx, ctx)) return status;
  return wait_context(drv, *ctx, hEvent);
})

FAKE_ENTRY(cuGreenCtxRecordEvent, (CUgreenCtx hCtx, CUevent hEvent), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = context_of_green(drv, hCtx, ctx)) return status;
  return record_context(drv, *ctx, hEvent);
})

FAKE_ENTRY(cuGreenCtxWaitEvent, (CUgreenCtx hCtx, CUevent hEvent), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = context_of_green(drv, hCtx, ctx)) return status;
  return wait_context(drv, *ctx, hEvent);
})
