// fake_driver_conformance: driver behaviour that the fake imitates, checked against whichever
// libcuda.so.1 it is given. CI runs it on the fake (label unit); on a GPU machine the same checks
// run on the real driver (label gpu), so every answer the fake gives here is one the real driver
// was seen to give.
//
//   fake_driver_conformance [path of libcuda.so.1]
//
// Exit status: 0 when every check passes, 1 when one fails (each failure is printed), 77 when
// the driver cannot be loaded or has no device (a machine without a GPU).
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "sluice/shim/cuda.h"

namespace {

constexpr int kSkip = 77;

// The entry points used here, resolved by their literal ABI names.
struct Driver {
#define FAKE_CONFORMANCE_API(X)                                                                                      \
  X(cuInit) X(cuDeviceGetCount) X(cuDeviceGetAttribute) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease_v2)  \
  X(cuCtxSetCurrent) X(cuCtxGetStreamPriorityRange) X(cuCtxSynchronize) X(cuStreamCreate) X(cuStreamDestroy_v2)      \
  X(cuStreamSynchronize) X(cuStreamQuery) X(cuStreamBeginCapture_v2) X(cuStreamEndCapture) X(cuStreamIsCapturing)   \
  X(cuStreamWaitEvent) X(cuStreamWaitValue32) X(cuEventCreate) X(cuEventDestroy_v2) X(cuEventRecord) X(cuEventQuery) \
  X(cuEventElapsedTime) X(cuMemAlloc_v2) X(cuMemFree_v2) X(cuMemAllocHost_v2) X(cuMemFreeHost) X(cuMemAllocManaged) \
  X(cuPointerGetAttribute) X(cuPointerGetAttributes) X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction)   \
  X(cuLaunchKernel) X(cuGraphDestroy) X(cuThreadExchangeStreamCaptureMode) X(cuGetProcAddress_v2) X(cuGetErrorName) \
  X(cuIpcGetMemHandle) X(cuIpcOpenMemHandle_v2) X(cuDeviceGetDevResource) X(cuDevSmResourceSplitByCount)
#define FAKE_CONFORMANCE_FIELD(name) decltype(&::name) name = nullptr;
  FAKE_CONFORMANCE_API(FAKE_CONFORMANCE_FIELD)
#undef FAKE_CONFORMANCE_FIELD
};

constexpr const char* kPtx = R"(.version 8.0
.target sm_90
.address_size 64
.visible .entry conformance_noop()
{
	ret;
}
)";

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

void expect_result(const Driver& d, CUresult expected, CUresult got, const std::string& what) {
  if (expected == got) return;
  const char* expected_name = "?";
  const char* got_name = "?";
  d.cuGetErrorName(expected, &expected_name);
  d.cuGetErrorName(got, &got_name);
  check(false, what + ": expected " + expected_name + ", got " + got_name);
}

void pointer_attributes(const Driver& d) {
  std::vector<char> pageable(4096);
  const auto pageable_ptr = reinterpret_cast<CUdeviceptr>(pageable.data());
  unsigned type = 99;
  expect_result(d, CUDA_ERROR_INVALID_VALUE, d.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, pageable_ptr),
                "cuPointerGetAttribute(MEMORY_TYPE) of pageable memory");
  CUpointer_attribute attribute = CU_POINTER_ATTRIBUTE_MEMORY_TYPE;
  void* data[] = {&type};
  expect_result(d, CUDA_SUCCESS, d.cuPointerGetAttributes(1, &attribute, data, pageable_ptr),
                "cuPointerGetAttributes of pageable memory");
  check(type == 0, "cuPointerGetAttributes: pageable memory type is 0, got " + std::to_string(type));

  void* pinned = nullptr;
  CUdeviceptr device = 0;
  CUdeviceptr managed = 0;
  expect_result(d, CUDA_SUCCESS, d.cuMemAllocHost_v2(&pinned, 64), "cuMemAllocHost");
  expect_result(d, CUDA_SUCCESS, d.cuMemAlloc_v2(&device, 64), "cuMemAlloc");
  expect_result(d, CUDA_SUCCESS, d.cuMemAllocManaged(&managed, 64, CU_MEM_ATTACH_GLOBAL), "cuMemAllocManaged");
  d.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, reinterpret_cast<CUdeviceptr>(pinned));
  check(type == CU_MEMORYTYPE_HOST, "pinned memory is CU_MEMORYTYPE_HOST, got " + std::to_string(type));
  d.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, device);
  check(type == CU_MEMORYTYPE_DEVICE, "device memory is CU_MEMORYTYPE_DEVICE, got " + std::to_string(type));
  d.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, managed);
  check(type == CU_MEMORYTYPE_DEVICE, "managed memory is CU_MEMORYTYPE_DEVICE, got " + std::to_string(type));
  unsigned managed_flag = 0;
  d.cuPointerGetAttribute(&managed_flag, CU_POINTER_ATTRIBUTE_IS_MANAGED, managed);
  check(managed_flag == 1, "IS_MANAGED of managed memory");

  // IPC: a handle cannot be opened by the process that made it.
  CUipcMemHandle handle{};
  expect_result(d, CUDA_SUCCESS, d.cuIpcGetMemHandle(&handle, device), "cuIpcGetMemHandle");
  CUdeviceptr opened = 0;
  expect_result(d, CUDA_ERROR_INVALID_CONTEXT, d.cuIpcOpenMemHandle_v2(&opened, handle, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS),
                "cuIpcOpenMemHandle in the exporting process");
  d.cuMemFreeHost(pinned);
  d.cuMemFree_v2(device);
  d.cuMemFree_v2(managed);
}

void events_and_memops(const Driver& d) {
  CUevent start = nullptr;
  CUevent untimed = nullptr;
  d.cuEventCreate(&start, CU_EVENT_DEFAULT);
  d.cuEventCreate(&untimed, CU_EVENT_DISABLE_TIMING);
  float ms = 0;
  expect_result(d, CUDA_SUCCESS, d.cuEventQuery(start), "cuEventQuery of a never recorded event");
  expect_result(d, CUDA_ERROR_INVALID_HANDLE, d.cuEventElapsedTime(&ms, start, start), "elapsed time of unrecorded events");
  d.cuEventRecord(start, nullptr);
  d.cuEventRecord(untimed, nullptr);
  d.cuCtxSynchronize();
  expect_result(d, CUDA_ERROR_INVALID_HANDLE, d.cuEventElapsedTime(&ms, start, untimed), "elapsed time with DISABLE_TIMING");
  d.cuEventDestroy_v2(start);
  d.cuEventDestroy_v2(untimed);

  void* word = nullptr;
  d.cuMemAllocHost_v2(&word, 8);
  // NOT_SUPPORTED, not INVALID_VALUE: bench/results/fake_driver_conformance_h200.txt.
  expect_result(d, CUDA_ERROR_NOT_SUPPORTED,
                d.cuStreamWaitValue32(nullptr, reinterpret_cast<CUdeviceptr>(word) + 1, 0, CU_STREAM_WAIT_VALUE_GEQ),
                "cuStreamWaitValue32 on a misaligned address");
  d.cuMemFreeHost(word);

  int least = 1;
  int greatest = 1;
  d.cuCtxGetStreamPriorityRange(&least, &greatest);
  check(least == 0 && greatest == -5, "stream priorities [-5, 0], got [" + std::to_string(greatest) + ", " + std::to_string(least) + "]");
}

void capture(const Driver& d, CUfunction noop) {
  CUstream blocking = nullptr;
  CUstream side = nullptr;
  d.cuStreamCreate(&blocking, CU_STREAM_DEFAULT);
  d.cuStreamCreate(&side, CU_STREAM_NON_BLOCKING);
  CUgraph graph = nullptr;
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;

  // Legacy-stream use while a blocking stream captures.
  d.cuStreamBeginCapture_v2(blocking, CU_STREAM_CAPTURE_MODE_RELAXED);
  expect_result(d, CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, d.cuStreamIsCapturing(CU_STREAM_LEGACY, &status), "cuStreamIsCapturing(legacy)");
  expect_result(d, CUDA_ERROR_STREAM_CAPTURE_IMPLICIT,
                d.cuLaunchKernel(noop, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr), "legacy launch during a blocking capture");
  d.cuStreamIsCapturing(blocking, &status);
  check(status == CU_STREAM_CAPTURE_STATUS_INVALIDATED, "the legacy launch invalidates the capture");
  expect_result(d, CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, d.cuStreamEndCapture(blocking, &graph), "end of an invalidated capture");
  check(graph == nullptr, "an invalidated capture gives no graph");

  // Synchronizing a capturing stream.
  d.cuStreamBeginCapture_v2(side, CU_STREAM_CAPTURE_MODE_RELAXED);
  expect_result(d, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, d.cuStreamSynchronize(side), "cuStreamSynchronize of a capturing stream");
  expect_result(d, CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, d.cuStreamEndCapture(side, &graph), "end after a synchronize");

  // Unsafe calls under the capture modes.
  struct Mode {
    CUstreamCaptureMode capture;
    CUstreamCaptureMode caller;
    bool other_thread;
    CUresult expected;
  };
  const Mode modes[] = {
      {CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_GLOBAL, false, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED},
      {CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_GLOBAL, true, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED},
      {CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, true, CUDA_SUCCESS},
      {CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, CU_STREAM_CAPTURE_MODE_GLOBAL, false, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED},
      {CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, CU_STREAM_CAPTURE_MODE_GLOBAL, true, CUDA_SUCCESS},
      {CU_STREAM_CAPTURE_MODE_RELAXED, CU_STREAM_CAPTURE_MODE_GLOBAL, false, CUDA_SUCCESS},
  };
  CUcontext ctx = nullptr;
  d.cuDevicePrimaryCtxRetain(&ctx, 0);
  for (const Mode& mode : modes) {
    d.cuStreamBeginCapture_v2(side, mode.capture);
    d.cuLaunchKernel(noop, 1, 1, 1, 1, 1, 1, 0, side, nullptr, nullptr);
    CUresult result = CUDA_ERROR_UNKNOWN;
    CUdeviceptr memory = 0;
    auto unsafe = [&] {
      CUstreamCaptureMode previous = mode.caller;
      d.cuThreadExchangeStreamCaptureMode(&previous);
      result = d.cuMemAlloc_v2(&memory, 64);
      d.cuThreadExchangeStreamCaptureMode(&previous);
    };
    if (mode.other_thread) {
      std::thread other([&] {
        d.cuCtxSetCurrent(ctx);
        unsafe();
      });
      other.join();
    } else {
      unsafe();
    }
    expect_result(d, mode.expected, result,
                  "cuMemAlloc with capture mode " + std::to_string(mode.capture) + ", caller mode " +
                      std::to_string(mode.caller) + (mode.other_thread ? ", other thread" : ", same thread"));
    if (result == CUDA_SUCCESS) d.cuMemFree_v2(memory);
    if (d.cuStreamEndCapture(side, &graph) == CUDA_SUCCESS) d.cuGraphDestroy(graph);
  }
  d.cuDevicePrimaryCtxRelease_v2(0);

  // Events recorded in a capture, and ordinary events waited on inside one.
  CUevent event = nullptr;
  d.cuEventCreate(&event, CU_EVENT_DEFAULT);
  d.cuStreamBeginCapture_v2(side, CU_STREAM_CAPTURE_MODE_GLOBAL);
  d.cuEventRecord(event, side);
  expect_result(d, CUDA_ERROR_CAPTURED_EVENT, d.cuEventQuery(event), "cuEventQuery of an event recorded in a capture");
  d.cuStreamWaitEvent(blocking, event, 0);  // joins the capture
  d.cuLaunchKernel(noop, 1, 1, 1, 1, 1, 1, 0, blocking, nullptr, nullptr);
  // ILLEGAL_STATE rather than STREAM_CAPTURE_UNMATCHED, and the failed end invalidates the capture, so
  // the origin's end answers INVALIDATED rather than UNJOINED: bench/results/fake_driver_conformance_h200.txt.
  expect_result(d, CUDA_ERROR_ILLEGAL_STATE, d.cuStreamEndCapture(blocking, &graph), "end on a joined stream");
  expect_result(d, CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, d.cuStreamEndCapture(side, &graph), "end with an unjoined fork");
  CUevent outside = nullptr;
  d.cuEventCreate(&outside, CU_EVENT_DEFAULT);
  d.cuEventRecord(outside, blocking);
  d.cuStreamBeginCapture_v2(side, CU_STREAM_CAPTURE_MODE_GLOBAL);
  expect_result(d, CUDA_ERROR_STREAM_CAPTURE_ISOLATION, d.cuStreamWaitEvent(side, outside, 0), "waiting on an event from outside the capture");
  d.cuStreamEndCapture(side, &graph);
  expect_result(d, CUDA_ERROR_ILLEGAL_STATE, d.cuStreamEndCapture(side, &graph), "end without a capture");
  d.cuCtxSynchronize();
  d.cuEventDestroy_v2(event);
  d.cuEventDestroy_v2(outside);
  d.cuStreamDestroy_v2(blocking);
  d.cuStreamDestroy_v2(side);
}

void proc_addresses(const Driver& d, void* library) {
  struct Query {
    const char* name;
    int version;
    cuuint64_t flags;
    const char* symbol;
  };
  const Query queries[] = {
      {"cuLaunchKernel", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuLaunchKernel_ptsz"},
      {"cuLaunchKernel", 12000, 0, "cuLaunchKernel"},
      {"cuMemcpyHtoD", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemcpyHtoD_v2_ptds"},
      {"cuMemAlloc", 13000, 0, "cuMemAlloc_v2"},
      {"cuStreamGetCaptureInfo", 13000, 0, "cuStreamGetCaptureInfo_v3"},
      {"cuCtxSynchronize", 13000, 0, "cuCtxSynchronize_v2"},
      {"cuDevicePrimaryCtxRelease", 7000, 0, "cuDevicePrimaryCtxRelease"},
  };
  for (const Query& q : queries) {
    void* pfn = nullptr;
    CUdriverProcAddressQueryResult status{};
    d.cuGetProcAddress_v2(q.name, &pfn, q.version, q.flags, &status);
    Dl_info info{};
    const char* answered = pfn != nullptr && dladdr(pfn, &info) != 0 && info.dli_sname != nullptr ? info.dli_sname : "(none)";
    check(pfn != nullptr && pfn == dlsym(library, q.symbol),
          std::string("cuGetProcAddress(") + q.name + ", " + std::to_string(q.version) + ", " + std::to_string(q.flags) +
              ") is " + q.symbol + ", got " + answered);
  }
  void* pfn = nullptr;
  CUdriverProcAddressQueryResult status{};
  // CUDA_SUCCESS with the status, as cuda.h documents: bench/results/fake_driver_conformance_h200.txt.
  expect_result(d, CUDA_SUCCESS, d.cuGetProcAddress_v2("cuLaunchKernelEx", &pfn, 11050, 0, &status), "too old a version");
  check(status == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT, "status VERSION_NOT_SUFFICIENT");
}

void green_contexts(const Driver& d) {
  int major = 0;
  int sms = 0;
  d.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0);
  d.cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0);
  if (major != 9) return;  // the partition rules below are sm_90's
  CUdevResource device{};
  expect_result(d, CUDA_SUCCESS, d.cuDeviceGetDevResource(0, &device, CU_DEV_RESOURCE_TYPE_SM), "cuDeviceGetDevResource");
  check(static_cast<int>(device.sm.smCount) == sms, "the device resource has every SM");
  unsigned groups = 0;
  d.cuDevSmResourceSplitByCount(nullptr, &groups, &device, nullptr, 0, 60);
  check(groups == static_cast<unsigned>(sms) / 64, "split by 60 SMs makes groups of 64, got " + std::to_string(groups));
  groups = 1;
  CUdevResource group{};
  CUdevResource rest{};
  d.cuDevSmResourceSplitByCount(&group, &groups, &device, &rest, 0, 8);
  check(group.sm.smCount == 8 && static_cast<int>(rest.sm.smCount) == sms - 8, "a group of 8 and the remainder");
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "libcuda.so.1";
  void* library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    std::printf("skip: cannot load %s: %s\n", path, dlerror());
    return kSkip;
  }
  const bool fake = dlsym(library, "sluice_fake_trace_read") != nullptr;
  if (argc <= 1 && fake) {
    std::printf("skip: libcuda.so.1 is the fake driver; give the real one's path\n");
    return kSkip;
  }
  Driver d;
  bool complete = true;
#define FAKE_CONFORMANCE_RESOLVE(name)                                  \
  d.name = reinterpret_cast<decltype(d.name)>(dlsym(library, #name)); \
  complete = complete && d.name != nullptr;
  FAKE_CONFORMANCE_API(FAKE_CONFORMANCE_RESOLVE)
#undef FAKE_CONFORMANCE_RESOLVE
  if (!complete) {
    std::printf("FAIL %s lacks entry points this check needs\n", path);
    return 1;
  }
  int count = 0;
  if (d.cuInit(0) != CUDA_SUCCESS || d.cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
    std::printf("skip: %s has no device\n", path);
    return kSkip;
  }
  std::printf("driver %s (%s)\n", path, fake ? "the fake" : "real");
  CUcontext ctx = nullptr;
  d.cuDevicePrimaryCtxRetain(&ctx, 0);
  d.cuCtxSetCurrent(ctx);
  CUmodule module = nullptr;
  CUfunction noop = nullptr;
  if (d.cuModuleLoadData(&module, kPtx) != CUDA_SUCCESS || d.cuModuleGetFunction(&noop, module, "conformance_noop") != CUDA_SUCCESS) {
    std::printf("FAIL cannot load the PTX module\n");
    return 1;
  }
  pointer_attributes(d);
  events_and_memops(d);
  capture(d, noop);
  proc_addresses(d, library);
  green_contexts(d);
  d.cuModuleUnload(module);
  d.cuDevicePrimaryCtxRelease_v2(0);
  const char* name = nullptr;
  expect_result(d, CUDA_ERROR_INVALID_VALUE, d.cuGetErrorName(static_cast<CUresult>(998), &name), "cuGetErrorName(998)");
  std::printf("%s: %d failed\n", failures == 0 ? "PASS" : "FAIL", failures);
  return failures == 0 ? 0 : 1;
}
