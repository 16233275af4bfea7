// Asynchronous copies described by structures, and batches of stream memory operations. 1D copies
// are a template in engine.h.
#include <vector>

#include "engine_data.h"
#include "sluice/shim/engine.h"

namespace sluice::shim {

// Device memory, pinned (page-locked or registered) host memory and managed memory are known to
// the driver; pageable host memory is not, and the driver stages it before the call returns.
bool Engine::holdable_pointer(CUdeviceptr pointer) const noexcept {
  if (driver_.cuPointerGetAttribute == nullptr) return false;
  unsigned int memory_type = 0;
  return driver_.cuPointerGetAttribute(&memory_type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, pointer) ==
         CUDA_SUCCESS;
}

template <typename Copy>
bool Engine::holdable_copy(const Copy& copy) const noexcept {
  auto side = [this](CUmemorytype type, const void* host, CUdeviceptr device) {
    switch (type) {
      case CU_MEMORYTYPE_HOST:
        return holdable_pointer(host);
      case CU_MEMORYTYPE_UNIFIED:
        return holdable_pointer(device);
      default:
        return true;  // device memory and arrays
    }
  };
  return side(copy.srcMemoryType, copy.srcHost, copy.srcDevice) &&
         side(copy.dstMemoryType, copy.dstHost, copy.dstDevice);
}

template <typename Copy, typename Fn>
CUresult Engine::copy_struct(StreamAbi abi, Fn fn, const Copy* copy, std::uint64_t bytes,
                             CUstream stream) {
  auto now = [&](CUstream s) { return fn(copy, s); };
  auto held = [&]() -> SubmitFn {
    if (copy == nullptr || !holdable_copy(*copy)) return {};
    return [fn, description = *copy](CUstream s) { return fn(&description, s); };
  };
  OpDesc desc;
  desc.kind = OpKind::copy;
  desc.bytes = bytes;
  return submit(Call{abi, stream, desc, nullptr, false, now, held});
}

CUresult Engine::copy_2d(StreamAbi abi, decltype(DriverApi::cuMemcpy2DAsync_v2) fn,
                         const CUDA_MEMCPY2D* copy, CUstream stream) {
  const std::uint64_t bytes =
      copy != nullptr ? std::uint64_t{copy->WidthInBytes} * copy->Height : 0;
  return copy_struct(abi, fn, copy, bytes, stream);
}

CUresult Engine::copy_3d(StreamAbi abi, decltype(DriverApi::cuMemcpy3DAsync_v2) fn,
                         const CUDA_MEMCPY3D* copy, CUstream stream) {
  const std::uint64_t bytes =
      copy != nullptr ? std::uint64_t{copy->WidthInBytes} * copy->Height * copy->Depth : 0;
  return copy_struct(abi, fn, copy, bytes, stream);
}

CUresult Engine::copy_3d_peer(StreamAbi abi, decltype(DriverApi::cuMemcpy3DPeerAsync) fn,
                              const CUDA_MEMCPY3D_PEER* copy, CUstream stream) {
  const std::uint64_t bytes =
      copy != nullptr ? std::uint64_t{copy->WidthInBytes} * copy->Height * copy->Depth : 0;
  return copy_struct(abi, fn, copy, bytes, stream);
}

CUresult Engine::batch_mem_op(StreamAbi abi, decltype(DriverApi::cuStreamBatchMemOp) fn,
                              CUstream stream, unsigned count, CUstreamBatchMemOpParams* ops,
                              unsigned flags) {
  auto now = [&](CUstream s) { return fn(s, count, ops, flags); };
  auto held = [&]() -> SubmitFn {
    if (count > 0 && ops == nullptr) return {};
    std::vector<CUstreamBatchMemOpParams> copy(ops, ops + count);
    return [fn, flags, copy = std::move(copy)](CUstream s) mutable {
      return fn(s, static_cast<unsigned>(copy.size()), copy.data(), flags);
    };
  };
  OpDesc desc;
  desc.kind = OpKind::mem_op;
  return submit(Call{abi, stream, desc, nullptr, false, now, held});
}

}  // namespace sluice::shim
