// Stream capture and graphs.
//
// A capture sequence starts on an origin stream (cuStreamBeginCapture); stream-ordered calls on a
// capturing stream become graph nodes instead of running. Other streams join by waiting on an
// event recorded in the capture and must rejoin the origin before cuStreamEndCapture
// (CUDA_ERROR_STREAM_CAPTURE_UNJOINED otherwise). Calls that conflict with a capture fail the way
// the driver fails and invalidate it:
//   * synchronize or query of a capturing stream: CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
//   * legacy-stream work while a blocking stream of the context captures:
//     CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
//   * potentially unsafe calls (allocations, frees, registrations, synchronous copies and memsets,
//     context synchronize) from a thread whose capture mode forbids them (see
//     cuThreadExchangeStreamCaptureMode): CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
//   * waiting on an event recorded outside the capture: CUDA_ERROR_STREAM_CAPTURE_ISOLATION;
//   * query or synchronize of an event recorded in a capture in progress:
//     CUDA_ERROR_CAPTURED_EVENT (without invalidating);
//   * cuStreamEndCapture on a stream that joined the capture rather than began it:
//     CUDA_ERROR_ILLEGAL_STATE (as the real driver answered, not STREAM_CAPTURE_UNMATCHED).
// A graph launch enqueues the nodes on the launch stream in a topological order: branches of a
// graph run one after another (a valid execution of the graph, not the most concurrent one).
//
// Thread safety: everything here runs under the driver lock.
#pragma once

#include <memory>

#include "driver.h"
#include "objects.h"

namespace sluice::fake {

CUresult capture_append(Driver& drv, Stream& stream, OpSpec spec);
CUresult check_legacy_capture(Context& ctx, bool invalidate);
CUresult check_unsafe_call(Driver& drv, Context* ctx);
void invalidate_capture(Capture& capture);
bool capture_active(const std::shared_ptr<Capture>& capture);

CUresult begin_capture(Driver& drv, Stream& stream, CUstreamCaptureMode mode, Graph* into);
CUresult end_capture(Driver& drv, Stream& stream, CUgraph* graph_out);

// cuEventRecord on a capturing stream, and cuStreamWaitEvent on an event recorded in a capture
// (the stream joins the capture) or by a capturing stream on an ordinary event.
CUresult capture_event_record(Stream& stream, Event& event);
CUresult capture_wait_event(Stream& stream, Event& event);

Graph* create_graph(Driver& drv, Context* ctx);
void destroy_graph(Driver& drv, Graph* graph);
GraphNode* add_graph_node(Driver& drv, Graph& graph, OpSpec spec, const std::vector<GraphNode*>& deps);
GraphExec* instantiate_graph(Driver& drv, Graph& graph);
void destroy_graph_exec(Driver& drv, GraphExec* exec);
CUresult launch_graph(Driver& drv, GraphExec& exec, Stream& stream);

// Decides at launch time whether an injected failure applies to this kernel launch.
void apply_injection(Driver& drv, KernelWork& kernel);

}  // namespace sluice::fake
