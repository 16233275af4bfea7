// Kernel launches: cuLaunchKernel, cuLaunchKernelEx (with its attributes) and
// cuLaunchCooperativeKernel. Parameters are copied when the call is made, from kernelParams or
// from the `extra` buffer (CU_LAUNCH_PARAM_BUFFER_POINTER/SIZE), as the driver does.
#include <array>
#include <cstring>

#include "api.h"
#include "capture.h"
#include "effects.h"
#include "executor.h"
#include "modules.h"

namespace sluice::fake {
namespace {

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxThreadsPerSm = 2048;
constexpr unsigned kMaxBlocksPerSm = 32;
constexpr unsigned kMaxPortableClusterSize = 8;

using Dim3 = std::array<unsigned, 3>;

struct LaunchRequest {
  LaunchRequest(CUfunction f, Dim3 grid_dims, Dim3 block_dims, unsigned shared, void** kernel_params)
      : function(f), grid(grid_dims), block(block_dims), shared_mem(shared), params(kernel_params) {}

  CUfunction function;
  Dim3 grid;
  Dim3 block;
  unsigned shared_mem;
  void** params;
  void** extra = nullptr;
  bool cooperative = false;
  unsigned cluster[3] = {1, 1, 1};
  CUevent completion_event = nullptr;
};

CUresult check_dimensions(const LaunchRequest& r) {
  if (r.grid[0] == 0 || r.grid[1] == 0 || r.grid[2] == 0) return CUDA_ERROR_INVALID_VALUE;
  if (r.grid[0] > 2147483647u || r.grid[1] > 65535u || r.grid[2] > 65535u) return CUDA_ERROR_INVALID_VALUE;
  if (r.block[0] == 0 || r.block[1] == 0 || r.block[2] == 0) return CUDA_ERROR_INVALID_VALUE;
  if (r.block[0] > 1024 || r.block[1] > 1024 || r.block[2] > 64) return CUDA_ERROR_INVALID_VALUE;
  if (std::uint64_t{r.block[0]} * r.block[1] * r.block[2] > kMaxThreadsPerBlock) return CUDA_ERROR_INVALID_VALUE;
  const std::uint64_t cluster = std::uint64_t{r.cluster[0]} * r.cluster[1] * r.cluster[2];
  if (cluster > kMaxPortableClusterSize) return CUDA_ERROR_INVALID_CLUSTER_SIZE;
  for (int i = 0; i < 3; ++i) {
    if (r.cluster[i] == 0 || r.grid[i] % r.cluster[i] != 0) return CUDA_ERROR_INVALID_CLUSTER_SIZE;
  }
  return CUDA_SUCCESS;
}

// Copies the launch's parameters into a buffer laid out as cuFuncGetParamInfo says.
CUresult copy_params(const KernelDesc& desc, const LaunchRequest& r, std::vector<std::uint8_t>& out) {
  out.assign(desc.param_bytes, 0);
  if (r.params != nullptr && r.extra != nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (r.params != nullptr) {
    for (std::size_t i = 0; i < desc.params.size(); ++i) {
      if (r.params[i] == nullptr) return CUDA_ERROR_INVALID_VALUE;
      std::memcpy(out.data() + desc.params[i].offset, r.params[i], desc.params[i].size);
    }
    return CUDA_SUCCESS;
  }
  if (r.extra != nullptr) {
    const void* buffer = nullptr;
    const std::size_t* size = nullptr;
    for (void** entry = r.extra; *entry != CU_LAUNCH_PARAM_END; entry += 2) {
      if (*entry == CU_LAUNCH_PARAM_BUFFER_POINTER) {
        buffer = entry[1];
      } else if (*entry == CU_LAUNCH_PARAM_BUFFER_SIZE) {
        size = static_cast<const std::size_t*>(entry[1]);
      } else {
        return CUDA_ERROR_INVALID_VALUE;
      }
    }
    if (buffer == nullptr || size == nullptr || *size < desc.param_bytes) return CUDA_ERROR_INVALID_VALUE;
    if (desc.param_bytes != 0) std::memcpy(out.data(), buffer, desc.param_bytes);
    return CUDA_SUCCESS;
  }
  return desc.params.empty() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult read_attributes(const CUlaunchConfig& config, LaunchRequest& r) {
  if (config.numAttrs > 0 && config.attrs == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < config.numAttrs; ++i) {
    const CUlaunchAttribute& attribute = config.attrs[i];
    switch (attribute.id) {
      case CU_LAUNCH_ATTRIBUTE_COOPERATIVE:
        r.cooperative = attribute.value.cooperative != 0;
        break;
      case CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION:
        r.cluster[0] = attribute.value.clusterDim.x;
        r.cluster[1] = attribute.value.clusterDim.y;
        r.cluster[2] = attribute.value.clusterDim.z;
        break;
      case CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT:
        r.completion_event = attribute.value.launchCompletionEvent.event;
        break;
      case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT:
        r.completion_event = attribute.value.programmaticEvent.event;
        break;
      case CU_LAUNCH_ATTRIBUTE_PRIORITY:  // the device model serves tickets in order
      case CU_LAUNCH_ATTRIBUTE_IGNORE:
      case CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW:
      case CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY:
      case CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
      case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION:
      case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP:
      case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN:
      case CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION:
      case CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE:
      case CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
        break;
      default:
        if (attribute.id >= CU_LAUNCH_ATTRIBUTE_MAX) return CUDA_ERROR_INVALID_VALUE;
        break;
    }
  }
  return CUDA_SUCCESS;
}

CUresult launch(Driver& drv, StreamArg arg, const LaunchRequest& r) {
  if (CUresult status = check_dimensions(r)) return status;
  return api::on_stream(drv, arg, [&](Stream& stream, auto&) {
    LaunchTarget target;
    if (CUresult status = resolve_launch_target(drv, r.function, target)) return status;
    if (r.shared_mem > max_dynamic_shared(target)) return CUDA_ERROR_INVALID_VALUE;
    KernelWork kernel;
    kernel.desc = target.desc;
    for (int i = 0; i < 3; ++i) {
      kernel.grid[i] = r.grid[i];
      kernel.block[i] = r.block[i];
    }
    kernel.shared_mem = r.shared_mem;
    kernel.cooperative = r.cooperative;
    if (r.cooperative) {
      const unsigned threads = r.block[0] * r.block[1] * r.block[2];
      const std::uint64_t resident = std::uint64_t{stream.ctx->sms.count()} * std::min(kMaxBlocksPerSm, kMaxThreadsPerSm / threads);
      if (kernel.blocks() > resident) return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
    }
    if (CUresult status = copy_params(*target.desc, r, kernel.params)) return status;
    if (target.desc->killable) kernel.kill_flag = kill_flag_address(drv, target);
    Event* completion = nullptr;
    if (r.completion_event != nullptr) {
      completion = lookup<Event>(drv, r.completion_event, HandleKind::event);
      if (completion == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    }
    apply_injection(drv, kernel);

    OpSpec spec;
    spec.kind = SLUICE_FAKE_OP_KERNEL;
    spec.engine = Engine::compute;
    spec.name = target.desc->name.c_str();
    if (target.desc->tag_param) {
      spec.tag = kernel_param(kernel, *target.desc->tag_param);
    } else if (!target.desc->params.empty()) {
      spec.tag = kernel_param(kernel, target.desc->params.size() - 1);
    }
    spec.work = std::move(kernel);
    if (CUresult status = submit(drv, stream, std::move(spec))) return status;
    if (completion != nullptr && !stream.capture) {
      OpSpec record;
      record.kind = SLUICE_FAKE_OP_EVENT_RECORD;
      record.name = "event record";
      record.tag = reinterpret_cast<std::uint64_t>(r.completion_event);
      record.work = EventRecordWork{record.tag};
      completion->record = enqueue_op(drv, stream, std::move(record));
    }
    return CUDA_SUCCESS;
  });
}

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

FAKE_STREAM_ENTRY(cuLaunchKernel, (CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                                   unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                                   unsigned int sharedMemBytes, CUstream hStream, void** kernelParams, void** extra), {
  LaunchRequest request{f, {gridDimX, gridDimY, gridDimZ}, {blockDimX, blockDimY, blockDimZ}, sharedMemBytes, kernelParams};
  request.extra = extra;
  return launch(drv, StreamArg{hStream, kZeroStream}, request);
})

FAKE_STREAM_ENTRY(cuLaunchCooperativeKernel, (CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                                              unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                                              unsigned int sharedMemBytes, CUstream hStream, void** kernelParams), {
  LaunchRequest request{f, {gridDimX, gridDimY, gridDimZ}, {blockDimX, blockDimY, blockDimZ}, sharedMemBytes, kernelParams};
  request.cooperative = true;
  return launch(drv, StreamArg{hStream, kZeroStream}, request);
})

FAKE_STREAM_ENTRY(cuLaunchKernelEx, (const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra), {
  if (config == nullptr) return CUDA_ERROR_INVALID_VALUE;
  LaunchRequest request{f,
                        {config->gridDimX, config->gridDimY, config->gridDimZ},
                        {config->blockDimX, config->blockDimY, config->blockDimZ},
                        config->sharedMemBytes,
                        kernelParams};
  request.extra = extra;
  if (CUresult status = read_attributes(*config, request)) return status;
  return launch(drv, StreamArg{config->hStream, kZeroStream}, request);
})
