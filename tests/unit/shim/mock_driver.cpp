#include "mock_driver.h"

#include <cstdlib>

namespace sluice::shim::test {
namespace {

MockDriver* g_current = nullptr;
thread_local CUcontext t_context = MockDriver::kContext;

Entry entry(const char* what, CUstream stream, std::uint64_t value = 0, std::uint64_t extra = 0) {
  return Entry{what, stream, value, extra, std::this_thread::get_id()};
}

std::uintptr_t raw(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

// ---- kernels ----

CUresult func_param_info(CUfunction f, std::size_t index, std::size_t* offset, std::size_t* size) {
  if (raw(f) == MockDriver::kNoLayout) return CUDA_ERROR_NOT_SUPPORTED;
  const std::size_t count = raw(f) == MockDriver::kFailing ? 1 : raw(f);
  if (index >= count) return CUDA_ERROR_INVALID_VALUE;
  *offset = index * 4;
  *size = 4;
  return CUDA_SUCCESS;
}

CUresult kernel_param_info(CUkernel, std::size_t, std::size_t*, std::size_t*) {
  return CUDA_ERROR_INVALID_HANDLE;
}

// Logs the first parameter's value (read at submission: a held launch must have copied it) and the
// sum of all parameters.
std::uint64_t first_param(void** params, void** extra) {
  if (params != nullptr) {
    std::uint32_t v = 0;
    std::memcpy(&v, params[0], sizeof v);
    return v;
  }
  if (extra != nullptr) {
    std::uint32_t v = 0;
    std::memcpy(&v, extra[1], sizeof v);
    return v;
  }
  return 0;
}

CUresult launch(CUfunction f, unsigned gx, unsigned, unsigned, unsigned, unsigned, unsigned,
                unsigned shared, CUstream s, void** params, void** extra) {
  MockDriver& mock = MockDriver::current();
  const int limit = mock.attribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                   MockDriver::kDefaultDynamicShared);
  if (shared > static_cast<unsigned>(limit)) {
    mock.append(entry("rejected", s, first_param(params, extra), shared));
    return CUDA_ERROR_INVALID_VALUE;
  }
  mock.append(entry("kernel", s, first_param(params, extra), gx));
  return raw(f) == MockDriver::kFailing ? CUDA_ERROR_LAUNCH_FAILED : CUDA_SUCCESS;
}

CUresult func_set_attribute(CUfunction f, CUfunction_attribute attribute, int value) {
  MockDriver::current().set_attribute(f, attribute, value);
  MockDriver::current().append(entry("set_attribute", nullptr, static_cast<std::uint64_t>(value),
                                     static_cast<std::uint64_t>(attribute)));
  return CUDA_SUCCESS;
}

CUresult func_get_attribute(int* value, CUfunction_attribute attribute, CUfunction f) {
  *value = MockDriver::current().attribute(
      f, attribute,
      attribute == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES ? MockDriver::kDefaultDynamicShared
                                                                   : 0);
  return CUDA_SUCCESS;
}

CUresult func_set_cache_config(CUfunction, CUfunc_cache config) {
  MockDriver::current().append(entry("cache_config", nullptr, static_cast<std::uint64_t>(config)));
  return CUDA_SUCCESS;
}

CUresult launch_cooperative(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                            unsigned by, unsigned bz, unsigned shared, CUstream s, void** params) {
  return launch(f, gx, gy, gz, bx, by, bz, shared, s, params, nullptr);
}

CUresult launch_ex(const CUlaunchConfig* config, CUfunction f, void** params, void** extra) {
  std::uint64_t attrs = 0;
  for (unsigned i = 0; i < config->numAttrs; ++i) attrs = attrs * 100 + config->attrs[i].id;
  MockDriver::current().append(
      entry("kernel_ex", config->hStream, first_param(params, extra), attrs));
  return raw(f) == MockDriver::kFailing ? CUDA_ERROR_LAUNCH_FAILED : CUDA_SUCCESS;
}

CUresult func_get_name(const char** name, CUfunction f) {
  if (raw(f) == MockDriver::kNoLayout) return CUDA_ERROR_INVALID_HANDLE;
  *name = raw(f) == 1 ? "one_param" : "other";
  return CUDA_SUCCESS;
}

CUresult func_get_module(CUmodule* module, CUfunction) {
  *module = handle<CUmodule>(0x30);
  return CUDA_SUCCESS;
}

// ---- copies and memsets ----

CUresult memset32(CUdeviceptr dst, unsigned value, std::size_t n, CUstream s) {
  MockDriver::current().append(entry("memset", s, value, dst + n));
  return CUDA_SUCCESS;
}

CUresult htod(CUdeviceptr dst, const void* src, std::size_t bytes, CUstream s) {
  std::uint32_t first = 0;
  std::memcpy(&first, src, sizeof first);
  MockDriver::current().append(entry("copy", s, dst, bytes * 1000000 + first));
  return CUDA_SUCCESS;
}

CUresult pointer_attribute(void* data, CUpointer_attribute, CUdeviceptr p) {
  // Device pointers are small numbers here; host pointers are pinned only when registered.
  if (p < 0x100000 || MockDriver::current().is_pinned(p)) {
    *static_cast<unsigned*>(data) = CU_MEMORYTYPE_HOST;
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult copy2d(const CUDA_MEMCPY2D* copy, CUstream s) {
  MockDriver::current().append(entry("copy2d", s, copy->WidthInBytes, copy->Height));
  return CUDA_SUCCESS;
}

CUresult batch(CUstream s, unsigned count, CUstreamBatchMemOpParams* ops, unsigned) {
  MockDriver::current().append(entry("batch", s, count, ops[0].writeValue.value));
  return CUDA_SUCCESS;
}

// ---- events, streams, contexts ----

CUresult event_record(CUevent e, CUstream s) {
  MockDriver::current().append(entry("record", s, raw(e)));
  return CUDA_SUCCESS;
}
CUresult event_record_flags(CUevent e, CUstream s, unsigned flags) {
  MockDriver::current().append(entry("record", s, raw(e), flags));
  return CUDA_SUCCESS;
}
CUresult stream_wait_event(CUstream s, CUevent e, unsigned) {
  MockDriver::current().append(entry("wait", s, raw(e)));
  return CUDA_SUCCESS;
}
CUresult event_query(CUevent) {
  MockDriver::current().event_queries.fetch_add(1);
  return CUDA_SUCCESS;
}
CUresult event_sync(CUevent e) {
  MockDriver::current().append(entry("event_sync", nullptr, raw(e)));
  return CUDA_SUCCESS;
}
CUresult event_elapsed(float* ms, CUevent, CUevent) {
  *ms = 1.5f;
  MockDriver::current().append(entry("elapsed", nullptr));
  return CUDA_SUCCESS;
}
CUresult event_destroy(CUevent e) {
  MockDriver::current().append(entry("event_destroy", nullptr, raw(e)));
  return CUDA_SUCCESS;
}
CUresult stream_sync(CUstream s) {
  MockDriver::current().append(entry("sync", s));
  return CUDA_SUCCESS;
}
CUresult stream_query(CUstream s) {
  MockDriver::current().append(entry("query", s));
  return CUDA_SUCCESS;
}
CUresult stream_destroy(CUstream s) {
  MockDriver::current().append(entry("stream_destroy", s));
  return CUDA_SUCCESS;
}
CUresult stream_get_flags(CUstream s, unsigned* flags) {
  return MockDriver::current().stream_flags(s, *flags) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}
CUresult stream_is_capturing(CUstream, CUstreamCaptureStatus* status) {
  *status = MockDriver::current().capturing.load() ? CU_STREAM_CAPTURE_STATUS_ACTIVE
                                                   : CU_STREAM_CAPTURE_STATUS_NONE;
  return CUDA_SUCCESS;
}
CUresult ctx_get_current(CUcontext* ctx) {
  *ctx = t_context;
  return CUDA_SUCCESS;
}
CUresult ctx_set_current(CUcontext ctx) {
  t_context = ctx;
  return CUDA_SUCCESS;
}
CUresult ctx_get_device(CUdevice* device) {
  *device = 0;
  return CUDA_SUCCESS;
}
CUresult exchange_capture_mode(CUstreamCaptureMode* mode) {
  MockDriver::current().append(entry("capture_mode", nullptr, static_cast<std::uint64_t>(*mode)));
  *mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
  return CUDA_SUCCESS;
}

}  // namespace

MockDriver::MockDriver() {
  g_current = this;
  api.cuLaunchKernel = launch;
  api.cuLaunchKernel_ptsz = launch;
  api.cuLaunchCooperativeKernel = launch_cooperative;
  api.cuLaunchKernelEx = launch_ex;
  api.cuFuncGetParamInfo = func_param_info;
  api.cuKernelGetParamInfo = kernel_param_info;
  api.cuFuncGetName = func_get_name;
  api.cuFuncGetModule = func_get_module;
  api.cuFuncSetAttribute = func_set_attribute;
  api.cuFuncGetAttribute = func_get_attribute;
  api.cuFuncSetCacheConfig = func_set_cache_config;
  api.cuMemsetD32Async = memset32;
  api.cuMemsetD32Async_ptsz = memset32;
  api.cuMemcpyHtoDAsync_v2 = htod;
  api.cuMemcpy2DAsync_v2 = copy2d;
  api.cuPointerGetAttribute = pointer_attribute;
  api.cuStreamBatchMemOp_v2 = batch;
  api.cuEventRecord = event_record;
  api.cuEventRecordWithFlags = event_record_flags;
  api.cuStreamWaitEvent = stream_wait_event;
  api.cuEventQuery = event_query;
  api.cuEventSynchronize = event_sync;
  api.cuEventElapsedTime_v2 = event_elapsed;
  api.cuEventDestroy_v2 = event_destroy;
  api.cuStreamSynchronize = stream_sync;
  api.cuStreamQuery = stream_query;
  api.cuStreamDestroy_v2 = stream_destroy;
  api.cuStreamGetFlags = stream_get_flags;
  api.cuStreamIsCapturing = stream_is_capturing;
  api.cuCtxGetCurrent = ctx_get_current;
  api.cuCtxSetCurrent = ctx_set_current;
  api.cuCtxGetDevice = ctx_get_device;
  api.cuThreadExchangeStreamCaptureMode = exchange_capture_mode;
}

MockDriver::~MockDriver() {
  g_current = nullptr;
}

MockDriver& MockDriver::current() {
  if (g_current == nullptr) std::abort();
  return *g_current;
}

void MockDriver::append(Entry e) {
  std::lock_guard lock(mu_);
  log_.push_back(std::move(e));
}

std::size_t MockDriver::count(const std::string& what) const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (const Entry& e : log_) n += e.what == what ? 1 : 0;
  return n;
}

std::vector<std::uint64_t> MockDriver::values(const std::string& what) const {
  std::lock_guard lock(mu_);
  std::vector<std::uint64_t> out;
  for (const Entry& e : log_) {
    if (e.what == what) out.push_back(e.value);
  }
  return out;
}

bool MockDriver::is_pinned(std::uintptr_t p) const {
  std::lock_guard lock(mu_);
  return pinned_.count(p) != 0;
}

int MockDriver::attribute(CUfunction f, int attribute, int fallback) const {
  std::lock_guard lock(mu_);
  auto it = attributes_.find({f, attribute});
  return it == attributes_.end() ? fallback : it->second;
}

void MockDriver::set_attribute(CUfunction f, int attribute, int value) {
  std::lock_guard lock(mu_);
  attributes_[{f, attribute}] = value;
}

bool MockDriver::stream_flags(CUstream s, unsigned& flags) const {
  std::lock_guard lock(mu_);
  for (const auto& [stream, f] : flags_) {
    if (stream == s) {
      flags = f;
      return true;
    }
  }
  return false;
}

}  // namespace sluice::shim::test
