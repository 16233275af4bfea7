// The fake driver's objects: what CUcontext, CUstream, CUevent, CUmodule, ... point to, and the
// operations that streams carry.
//
// A handle given to the application is the address of one of these objects, registered in the
// driver's handle table (driver.h); every handle the application passes in is looked up there
// first, so stale or foreign handles are refused instead of dereferenced.
//
// Thread safety: every field is guarded by the driver lock (Driver::mu) unless stated otherwise.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include "engine_board.h"
#include "memory.h"
#include "module_image.h"
#include "sluice/fake/fake_driver.h"
#include "sluice/shim/cuda.h"
#include "sm_mask.h"

namespace sluice::fake {

struct Context;
struct Device;
class Executor;
struct Graph;
struct GraphNode;
struct Stream;
struct Capture;

enum class HandleKind : std::uint8_t {
  context,
  stream,
  event,
  module,
  library,
  kernel,
  function,
  graph,
  graph_node,
  graph_exec,
  green_ctx,
  mem_pool,
  resource_desc,
};

struct Handle {
  explicit Handle(HandleKind kind) : handle_kind(kind) {}
  virtual ~Handle() = default;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  const HandleKind handle_kind;
};

// ---- operations -------------------------------------------------------------------------------

struct KernelWork {
  std::shared_ptr<const KernelDesc> desc;
  std::vector<std::uint8_t> params;  // the parameter buffer, desc->param_bytes long
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  unsigned shared_mem = 0;
  bool cooperative = false;
  CUresult inject = CUDA_SUCCESS;  // failure injected at launch (sluice_fake_fail_kernel)
  bool inject_sticky = false;
  // Kill-instrumented twins (desc->killable): the module's __sluice_kill_flag global, and how far
  // the grid got (blocks run wave by wave, each checking the kill word at entry).
  std::uintptr_t kill_flag = 0;
  std::uint64_t next_block = 0;

  std::uint64_t blocks() const {
    return std::uint64_t{grid[0]} * grid[1] * grid[2];
  }
};

// A copy of `height` rows of `width` bytes in `depth` slices. A side that is device-visible memory
// (an allocation the driver knows) is checked again when the copy runs.
struct CopyWork {
  std::uintptr_t dst = 0;
  std::uintptr_t src = 0;
  std::size_t width = 0;
  std::size_t height = 1;
  std::size_t depth = 1;
  std::size_t dst_pitch = 0;
  std::size_t src_pitch = 0;
  std::size_t dst_slice = 0;  // bytes between slices
  std::size_t src_slice = 0;
  bool check_dst = false;
  bool check_src = false;
  std::shared_ptr<std::vector<std::uint8_t>> staged;  // pageable source copied at call time
  const char* label = "memcpy";

  std::size_t bytes() const { return width * height * depth; }
};

struct MemsetWork {
  std::uintptr_t dst = 0;
  std::size_t pitch = 0;
  unsigned element_size = 1;
  std::uint32_t value = 0;
  std::size_t width = 0;  // elements per row
  std::size_t height = 1;
};

struct EventRecordWork {
  std::uint64_t event = 0;  // the handle, for the trace
};

struct HostFuncWork {
  CUhostFn fn = nullptr;
  CUstreamCallback callback = nullptr;
  CUstream callback_stream = nullptr;
  void* user = nullptr;
};

struct MemWriteWork {
  std::uintptr_t address = 0;
  std::uint64_t value = 0;
  bool wide = false;
};

struct MemWaitWork {
  std::uintptr_t address = 0;
  std::uint64_t value = 0;
  bool wide = false;
  unsigned flags = 0;  // CUstreamWaitValue_flags
};

struct MemFreeWork {
  std::uintptr_t address = 0;
  bool graph_owned = false;  // a graph's free node: the range stays reserved
};

struct MarkerWork {
  std::uintptr_t revive = 0;  // a graph's allocation node: the range becomes live again
};

using Work = std::variant<KernelWork, CopyWork, MemsetWork, EventRecordWork, HostFuncWork, MemWriteWork,
                          MemWaitWork, MemFreeWork, MarkerWork>;

// What to do, independent of where: a stream operation before it is enqueued, or a graph node.
struct OpSpec {
  sluice_fake_op_kind kind = SLUICE_FAKE_OP_MARKER;
  Engine engine = Engine::none;
  Work work = MarkerWork{};
  const char* name = "marker";  // a literal, or the name of the kernel description in `work`
  std::uint64_t tag = 0;
  std::uint64_t bytes = 0;
};

enum class OpState : std::uint8_t {
  queued,      // in its stream, not yet at the head or waiting for dependencies
  published,   // on the engine board, waiting for its engine
  running,     // occupying its engine until end_ns
  dispatched,  // a host function handed to the host worker
  done,
};

struct Op;
using OpPtr = std::shared_ptr<Op>;

struct Op {
  OpSpec spec;
  Stream* stream = nullptr;  // valid until the op is done
  Context* ctx = nullptr;
  Device* device = nullptr;
  std::vector<OpPtr> deps;  // cross-stream dependencies: event waits, the legacy-stream barrier
  OpState state = OpState::queued;
  bool from_graph = false;
  int slot = -1;
  std::uint64_t ticket = 0;
  std::uint64_t duration_ns = 0;
  std::uint64_t submit_ns = 0;
  std::uint64_t start_ns = 0;
  std::uint64_t end_ns = 0;
  SmMask sms;
  CUresult result = CUDA_SUCCESS;
  std::uint64_t stream_id = 0;
  std::uint64_t stream_handle = 0;
  std::uint64_t ctx_id = 0;
};

// ---- contexts, streams, events ----------------------------------------------------------------

enum class StreamRole : std::uint8_t { normal, legacy, per_thread };

struct Stream : Handle {
  Stream() : Handle(HandleKind::stream) {}
  Context* ctx = nullptr;
  unsigned flags = 0;  // CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING
  int priority = 0;
  StreamRole role = StreamRole::normal;
  std::uint64_t id = 0;
  std::deque<OpPtr> queue;
  OpPtr last;  // the most recently enqueued operation (done or not)
  bool destroyed = false;
  bool busy = false;  // in its executor's list of streams with work
  // Stream capture.
  std::shared_ptr<Capture> capture;
  std::vector<GraphNode*> capture_deps;  // what the next captured node depends on
  std::vector<CUgraphNode> capture_deps_out;  // storage behind cuStreamGetCaptureInfo
  std::vector<CUgraphEdgeData> capture_edges_out;  // all default edges: no edge data is recorded

  bool blocking() const { return (flags & CU_STREAM_NON_BLOCKING) == 0; }
  CUstream handle() {
    if (role == StreamRole::legacy) return CU_STREAM_LEGACY;
    if (role == StreamRole::per_thread) return CU_STREAM_PER_THREAD;
    return reinterpret_cast<CUstream>(this);
  }
};

struct GreenCtx;

struct Context : Handle {
  Context() : Handle(HandleKind::context) {}
  Device* device = nullptr;
  unsigned flags = 0;
  bool primary = false;
  bool active = true;  // a primary context is inactive while nothing retains it
  int primary_refs = 0;
  GreenCtx* green = nullptr;
  std::uint64_t id = 0;
  SmMask sms;
  Stream* legacy = nullptr;
  std::vector<Stream*> streams;  // every stream, the legacy and per-thread ones included
  std::map<std::thread::id, Stream*> per_thread;
  CUresult sticky = CUDA_SUCCESS;    // a device fault: every later call fails with it
  CUresult deferred = CUDA_SUCCESS;  // reported once by the next synchronize or query
  std::map<int, std::size_t> limits;
  CUfunc_cache cache_config = CU_FUNC_CACHE_PREFER_NONE;
  CUsharedconfig shared_config = CU_SHARED_MEM_CONFIG_DEFAULT_BANK_SIZE;
};

struct Event : Handle {
  Event() : Handle(HandleKind::event) {}
  Context* ctx = nullptr;
  unsigned flags = 0;
  OpPtr record;                      // the latest record outside capture
  std::shared_ptr<Capture> capture;  // set while the latest record was captured
  std::vector<GraphNode*> capture_nodes;
};

// ---- modules, libraries, functions ------------------------------------------------------------

struct Library;
struct Module;

struct Function : Handle {
  Function() : Handle(HandleKind::function) {}
  Module* module = nullptr;
  std::shared_ptr<const KernelDesc> desc;
  std::map<int, int> attributes;  // set through cuFuncSetAttribute
  CUfunc_cache cache_config = CU_FUNC_CACHE_PREFER_NONE;
};

struct Module : Handle {
  Module() : Handle(HandleKind::module) {}
  Context* ctx = nullptr;
  Library* library = nullptr;  // the library it was loaded for, if any
  ModuleImage image;
  std::map<std::string, Function*> functions;  // made on first cuModuleGetFunction
  std::map<std::string, std::pair<std::uintptr_t, std::size_t>> globals;
};

struct Kernel : Handle {
  Kernel() : Handle(HandleKind::kernel) {}
  Library* library = nullptr;
  std::shared_ptr<const KernelDesc> desc;
  std::map<int, int> attributes;
};

struct Library : Handle {
  Library() : Handle(HandleKind::library) {}
  ModuleImage image;
  std::map<std::string, Kernel*> kernels;
  std::map<Context*, Module*> modules;  // the library loaded into each context that used it
};

// ---- graphs -----------------------------------------------------------------------------------

struct GraphNode : Handle {
  GraphNode() : Handle(HandleKind::graph_node) {}
  Graph* graph = nullptr;
  std::size_t index = 0;
  OpSpec spec;
  std::vector<GraphNode*> deps;
  CUgraphNodeType type = CU_GRAPH_NODE_TYPE_EMPTY;
};

struct Graph : Handle {
  Graph() : Handle(HandleKind::graph) {}
  Context* ctx = nullptr;
  std::vector<std::unique_ptr<GraphNode>> nodes;  // in a topological order
};

struct GraphExec : Handle {
  GraphExec() : Handle(HandleKind::graph_exec) {}
  Context* ctx = nullptr;
  std::vector<OpSpec> nodes;  // topological order: a launch runs them in this order
};

// One stream capture sequence, shared by every stream that joined it.
struct Capture {
  std::uint64_t id = 0;
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
  std::thread::id thread;
  Stream* origin = nullptr;
  Graph* graph = nullptr;
  bool owns_graph = true;  // false for cuStreamBeginCaptureToGraph
  bool invalidated = false;
  std::set<Stream*> streams;
};

// ---- green contexts and resources -------------------------------------------------------------

struct GreenCtx : Handle {
  GreenCtx() : Handle(HandleKind::green_ctx) {}
  Context* ctx = nullptr;  // the CUcontext of cuCtxFromGreenCtx
  SmMask sms;
};

struct ResourceDesc : Handle {
  ResourceDesc() : Handle(HandleKind::resource_desc) {}
  Device* device = nullptr;
  SmMask sms;
};

struct MemPool : Handle {
  MemPool() : Handle(HandleKind::mem_pool) {}
  Device* device = nullptr;
  std::map<int, std::uint64_t> attributes;
};

// ---- devices ----------------------------------------------------------------------------------

struct Device {
  int ordinal = 0;
  unsigned sms = 0;
  std::uint64_t total_memory = 0;
  std::unique_ptr<EngineBoard> board;
  Arena arena;
  Context* primary = nullptr;  // made on first retain; kept (inactive) after the last release
  std::unique_ptr<Executor> executor;
  std::vector<Context*> contexts;
  MemPool* default_pool = nullptr;
  MemPool* current_pool = nullptr;
};

}  // namespace sluice::fake
