// Graphs made by stream capture: instantiate, launch, upload, inspect, destroy. Building graphs
// node by node (cuGraphAdd*Node) and updating executable graphs are not modelled.
#include "api.h"
#include "capture.h"
#include "executor.h"

namespace sluice::fake {
namespace {

Graph* graph_of(Driver& drv, CUgraph handle) { return lookup<Graph>(drv, handle, HandleKind::graph); }

bool capturing_into(Driver& drv, const Graph& graph) {
  for (const auto& capture : drv.captures) {
    if (capture->graph == &graph) return true;
  }
  return false;
}

CUresult instantiate(Driver& drv, CUgraphExec* out, CUgraph handle) {
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  Graph* graph = graph_of(drv, handle);
  if (graph == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *out = to_handle<GraphExec, CUgraphExec>(instantiate_graph(drv, *graph));
  return CUDA_SUCCESS;
}

CUresult upload(Driver& drv, Stream& stream, CUgraphExec handle) {
  if (lookup<GraphExec>(drv, handle, HandleKind::graph_exec) == nullptr) return CUDA_ERROR_INVALID_VALUE;
  OpSpec spec;
  spec.name = "graph upload";
  return submit(drv, stream, std::move(spec));
}

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

FAKE_ENTRY(cuGraphCreate, (CUgraph * phGraph, unsigned int flags), {
  if (phGraph == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  *phGraph = to_handle<Graph, CUgraph>(create_graph(drv, ctx));
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuGraphDestroy, (CUgraph hGraph), {
  std::lock_guard lock(drv.mu);
  Graph* graph = graph_of(drv, hGraph);
  if (graph == nullptr || capturing_into(drv, *graph)) return CUDA_ERROR_INVALID_VALUE;
  destroy_graph(drv, graph);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuGraphInstantiateWithFlags, (CUgraphExec * phGraphExec, CUgraph hGraph, unsigned long long flags), {
  (void)flags;
  std::lock_guard lock(drv.mu);
  return instantiate(drv, phGraphExec, hGraph);
})

FAKE_ENTRY_TWO_ABIS(cuGraphInstantiate_v2, cuGraphInstantiate, (CUgraphExec * phGraphExec, CUgraph hGraph, CUgraphNode* phErrorNode, char* logBuffer, size_t bufferSize), {
  std::lock_guard lock(drv.mu);
  if (phErrorNode != nullptr) *phErrorNode = nullptr;
  if (logBuffer != nullptr && bufferSize > 0) logBuffer[0] = '\0';
  return instantiate(drv, phGraphExec, hGraph);
})

FAKE_STREAM_ENTRY(cuGraphInstantiateWithParams, (CUgraphExec * phGraphExec, CUgraph hGraph, CUDA_GRAPH_INSTANTIATE_PARAMS* instantiateParams), {
  if (instantiateParams == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  instantiateParams->hErrNode_out = nullptr;
  CUresult status = instantiate(drv, phGraphExec, hGraph);
  instantiateParams->result_out = status == CUDA_SUCCESS ? CUDA_GRAPH_INSTANTIATE_SUCCESS : CUDA_GRAPH_INSTANTIATE_ERROR;
  if (status != CUDA_SUCCESS || (instantiateParams->flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD) == 0) return status;
  Stream* stream = nullptr;
  if (CUresult resolved = resolve_stream(drv, StreamArg{instantiateParams->hUploadStream, kZeroStream}, stream)) return resolved;
  return upload(drv, *stream, *phGraphExec);
})

FAKE_ENTRY(cuGraphExecDestroy, (CUgraphExec hGraphExec), {
  std::lock_guard lock(drv.mu);
  auto* exec = lookup<GraphExec>(drv, hGraphExec, HandleKind::graph_exec);
  if (exec == nullptr) return CUDA_ERROR_INVALID_VALUE;
  destroy_graph_exec(drv, exec);  // launches already made keep their own copies of the nodes
  return CUDA_SUCCESS;
})

FAKE_STREAM_ENTRY(cuGraphLaunch, (CUgraphExec hGraphExec, CUstream hStream), {
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    auto* exec = lookup<GraphExec>(drv, hGraphExec, HandleKind::graph_exec);
    if (exec == nullptr) return CUDA_ERROR_INVALID_VALUE;
    return launch_graph(drv, *exec, stream);
  });
})

FAKE_STREAM_ENTRY(cuGraphUpload, (CUgraphExec hGraphExec, CUstream hStream), {
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) { return upload(drv, stream, hGraphExec); });
})

FAKE_ENTRY(cuGraphExecUpdate_v2, (CUgraphExec hGraphExec, CUgraph hGraph, CUgraphExecUpdateResultInfo* resultInfo), {
  (void)hGraphExec;
  (void)hGraph;
  if (resultInfo != nullptr) {
    resultInfo->result = CU_GRAPH_EXEC_UPDATE_ERROR_NOT_SUPPORTED;
    resultInfo->errorNode = nullptr;
    resultInfo->errorFromNode = nullptr;
  }
  return CUDA_ERROR_NOT_SUPPORTED;  // callers re-instantiate, as they must for any refused update
})

FAKE_ENTRY(cuGraphGetNodes, (CUgraph hGraph, CUgraphNode* nodes, size_t* numNodes), {
  if (numNodes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Graph* graph = graph_of(drv, hGraph);
  if (graph == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (nodes != nullptr) {
    for (std::size_t i = 0; i < *numNodes && i < graph->nodes.size(); ++i) {
      nodes[i] = to_handle<GraphNode, CUgraphNode>(graph->nodes[i].get());
    }
  }
  *numNodes = graph->nodes.size();
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuGraphGetRootNodes, (CUgraph hGraph, CUgraphNode* rootNodes, size_t* numRootNodes), {
  if (numRootNodes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Graph* graph = graph_of(drv, hGraph);
  if (graph == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::size_t count = 0;
  for (const auto& node : graph->nodes) {
    if (!node->deps.empty()) continue;
    if (rootNodes != nullptr && count < *numRootNodes) rootNodes[count] = to_handle<GraphNode, CUgraphNode>(node.get());
    ++count;
  }
  *numRootNodes = count;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuGraphNodeGetType, (CUgraphNode hNode, CUgraphNodeType* type), {
  if (type == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  auto* node = lookup<GraphNode>(drv, hNode, HandleKind::graph_node);
  if (node == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *type = node->type;
  return CUDA_SUCCESS;
})
