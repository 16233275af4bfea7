// Copies and memsets of linear memory (arrays are not modelled: CUDA_ERROR_NOT_SUPPORTED).
//
// Host-synchronization follows the driver's rules ("API synchronization behavior"):
//   * an asynchronous copy from pageable memory reads the source when it is called (staged);
//   * an asynchronous copy to pageable memory returns once the copy is done;
//   * synchronous copies run on the default stream and return when done (device to device ones
//     return at once); they report the context's pending errors like any synchronizing call;
//   * synchronous memsets are asynchronous unless they write pinned host memory.
#include <cstring>

#include "api.h"
#include "capture.h"
#include "executor.h"

namespace sluice::fake {
namespace {

enum class Expect : std::uint8_t { any, to_device, to_host, device_to_device };

struct CopySide {
  std::uintptr_t address = 0;
  std::size_t pitch = 0;
  std::size_t slice = 0;
};

struct CopyRequest {
  CopySide dst;
  CopySide src;
  std::size_t width = 0;
  std::size_t height = 1;
  std::size_t depth = 1;
  Expect expect = Expect::any;
};

std::size_t extent(const CopyRequest& request, const CopySide& side) {
  return (request.depth - 1) * side.slice + (request.height - 1) * side.pitch + request.width;
}

bool device_visible(PtrClass kind) { return kind != PtrClass::pageable && kind != PtrClass::invalid; }

const char* copy_label(PtrClass dst, PtrClass src) {
  const bool to_device = dst == PtrClass::device || dst == PtrClass::managed;
  const bool from_device = src == PtrClass::device || src == PtrClass::managed;
  if (to_device && from_device) return "memcpy DtoD";
  if (to_device) return "memcpy HtoD";
  if (from_device) return "memcpy DtoH";
  return "memcpy HtoH";
}

// Enqueues one copy on `stream`; waits when the rules above say so.
CUresult copy(Driver& drv, std::unique_lock<std::mutex>& lock, Stream& stream, const CopyRequest& request, bool synchronous) {
  if (request.width == 0 || request.height == 0 || request.depth == 0) return CUDA_SUCCESS;
  const PtrClass dst = classify(drv, request.dst.address, extent(request, request.dst));
  const PtrClass src = classify(drv, request.src.address, extent(request, request.src));
  if (dst == PtrClass::invalid || src == PtrClass::invalid) return CUDA_ERROR_INVALID_VALUE;
  const bool dst_ok = request.expect == Expect::to_host || request.expect == Expect::any || device_visible(dst);
  const bool src_ok = request.expect == Expect::to_device || request.expect == Expect::any || device_visible(src);
  if (!dst_ok || !src_ok) return CUDA_ERROR_INVALID_VALUE;
  const bool pageable = dst == PtrClass::pageable || src == PtrClass::pageable;
  if (stream.capture && pageable) {
    invalidate_capture(*stream.capture);
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }

  CopyWork work;
  work.dst = request.dst.address;
  work.src = request.src.address;
  work.width = request.width;
  work.height = request.height;
  work.depth = request.depth;
  work.dst_pitch = request.dst.pitch;
  work.src_pitch = request.src.pitch;
  work.dst_slice = request.dst.slice;
  work.src_slice = request.src.slice;
  work.check_dst = device_visible(dst);
  work.check_src = device_visible(src);
  work.label = copy_label(dst, src);
  if (src == PtrClass::pageable) {
    // Staged now: the application may reuse its buffer as soon as the call returns.
    auto staged = std::make_shared<std::vector<std::uint8_t>>(work.bytes());
    std::uint8_t* out = staged->data();
    for (std::size_t z = 0; z < work.depth; ++z) {
      for (std::size_t y = 0; y < work.height; ++y, out += work.width) {
        std::memcpy(out, reinterpret_cast<const void*>(work.src + z * work.src_slice + y * work.src_pitch), work.width);
      }
    }
    work.staged = std::move(staged);
  }
  OpSpec spec;
  spec.kind = SLUICE_FAKE_OP_COPY;
  spec.engine = Engine::copy;
  spec.name = work.label;
  spec.bytes = work.bytes();
  spec.tag = spec.bytes;
  spec.work = std::move(work);
  OpPtr op;
  if (CUresult status = submit(drv, stream, std::move(spec), &op)) return status;
  const bool device_to_device = device_visible(dst) && device_visible(src) && dst != PtrClass::host_pinned &&
                                src != PtrClass::host_pinned;
  if ((synchronous && !device_to_device) || dst == PtrClass::pageable) wait_for(drv, lock, op);
  return synchronous ? take_context_error(*stream.ctx) : CUDA_SUCCESS;
}

// The stream a synchronous call runs on, with the checks a synchronous call gets during capture.
CUresult sync_stream(Driver& drv, DefaultStream zero, Stream*& out) {
  if (CUresult status = resolve_stream(drv, StreamArg{nullptr, zero}, out)) return status;
  if (out->capture) {
    invalidate_capture(*out->capture);
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  return check_unsafe_call(drv, out->role == StreamRole::legacy ? out->ctx : nullptr);
}

CUresult copy_sync(Driver& drv, DefaultStream zero, const CopyRequest& request) {
  std::unique_lock lock(drv.mu);
  Stream* stream = nullptr;
  if (CUresult status = sync_stream(drv, zero, stream)) return status;
  return copy(drv, lock, *stream, request, true);
}

CUresult copy_async(Driver& drv, StreamArg arg, const CopyRequest& request) {
  return api::on_stream(drv, arg, [&](Stream& stream, std::unique_lock<std::mutex>& lock) {
    return copy(drv, lock, stream, request, false);
  });
}

CopyRequest linear(CUdeviceptr dst, CUdeviceptr src, std::size_t bytes, Expect expect) {
  CopyRequest request;
  request.dst.address = dst;
  request.src.address = src;
  request.width = bytes;
  request.expect = expect;
  return request;
}

CUdeviceptr host_address(const void* pointer) { return reinterpret_cast<CUdeviceptr>(pointer); }

// Reads one side of a CUDA_MEMCPY2D/3D description.
CUresult side_of(CUmemorytype type, const void* host, CUdeviceptr device, CUarray array, std::size_t x, std::size_t y,
                 std::size_t z, std::size_t pitch, std::size_t height, CopySide& out) {
  if (array != nullptr || type == CU_MEMORYTYPE_ARRAY) return CUDA_ERROR_NOT_SUPPORTED;
  std::uintptr_t base = 0;
  switch (type) {
    case CU_MEMORYTYPE_HOST: base = host_address(host); break;
    case CU_MEMORYTYPE_DEVICE:
    case CU_MEMORYTYPE_UNIFIED: base = device; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  out.address = base + z * height * pitch + y * pitch + x;
  out.pitch = pitch;
  out.slice = pitch * height;
  return CUDA_SUCCESS;
}

CUresult request_2d(const CUDA_MEMCPY2D* p, CopyRequest& out) {
  if (p == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult status = side_of(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes, p->srcY, 0,
                                p->srcPitch, p->Height, out.src)) {
    return status;
  }
  if (CUresult status = side_of(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes, p->dstY, 0,
                                p->dstPitch, p->Height, out.dst)) {
    return status;
  }
  if (p->Height > 1 && (p->srcPitch < p->WidthInBytes || p->dstPitch < p->WidthInBytes)) return CUDA_ERROR_INVALID_VALUE;
  out.width = p->WidthInBytes;
  out.height = p->Height;
  return CUDA_SUCCESS;
}

template <typename Params>
CUresult request_3d(const Params* p, CopyRequest& out) {
  if (p == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (p->Depth > 1 && (p->srcHeight < p->Height || p->dstHeight < p->Height)) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult status = side_of(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes, p->srcY, p->srcZ,
                                p->srcPitch, p->srcHeight, out.src)) {
    return status;
  }
  if (CUresult status = side_of(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes, p->dstY, p->dstZ,
                                p->dstPitch, p->dstHeight, out.dst)) {
    return status;
  }
  if (p->Height > 1 && (p->srcPitch < p->WidthInBytes || p->dstPitch < p->WidthInBytes)) return CUDA_ERROR_INVALID_VALUE;
  out.width = p->WidthInBytes;
  out.height = p->Height;
  out.depth = p->Depth;
  return CUDA_SUCCESS;
}

// ---- memsets ----------------------------------------------------------------------------------

CUresult memset(Driver& drv, std::unique_lock<std::mutex>& lock, Stream& stream, CUdeviceptr dst, std::size_t pitch,
                unsigned element_size, std::uint32_t value, std::size_t width, std::size_t height, bool synchronous) {
  if (width == 0 || height == 0) return CUDA_SUCCESS;
  if (dst % element_size != 0) return CUDA_ERROR_INVALID_VALUE;
  const std::size_t row_bytes = width * element_size;
  if (height > 1 && pitch < row_bytes) return CUDA_ERROR_INVALID_VALUE;
  const PtrClass target = classify(drv, dst, (height - 1) * pitch + row_bytes);
  if (!device_visible(target)) return CUDA_ERROR_INVALID_VALUE;
  OpSpec spec;
  spec.kind = SLUICE_FAKE_OP_MEMSET;
  spec.engine = Engine::copy;
  spec.name = "memset";
  spec.tag = value;
  spec.bytes = row_bytes * height;
  spec.work = MemsetWork{dst, pitch, element_size, value, width, height};
  OpPtr op;
  if (CUresult status = submit(drv, stream, std::move(spec), &op)) return status;
  if (synchronous && target == PtrClass::host_pinned) wait_for(drv, lock, op);
  return CUDA_SUCCESS;
}

CUresult memset_sync(Driver& drv, DefaultStream zero, CUdeviceptr dst, std::size_t pitch, unsigned element_size,
                     std::uint32_t value, std::size_t width, std::size_t height) {
  std::unique_lock lock(drv.mu);
  Stream* stream = nullptr;
  if (CUresult status = sync_stream(drv, zero, stream)) return status;
  return memset(drv, lock, *stream, dst, pitch, element_size, value, width, height, true);
}

CUresult memset_async(Driver& drv, StreamArg arg, CUdeviceptr dst, std::size_t pitch, unsigned element_size,
                      std::uint32_t value, std::size_t width, std::size_t height) {
  return api::on_stream(drv, arg, [&](Stream& stream, std::unique_lock<std::mutex>& lock) {
    return memset(drv, lock, stream, dst, pitch, element_size, value, width, height, false);
  });
}

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

// ---- synchronous copies -----------------------------------------------------------------------

FAKE_SYNC_ENTRY(cuMemcpy, (CUdeviceptr dst, CUdeviceptr src, size_t ByteCount),
                { return copy_sync(drv, kZeroStream, linear(dst, src, ByteCount, Expect::any)); })

FAKE_SYNC_ENTRY(cuMemcpyHtoD_v2, (CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount),
                { return copy_sync(drv, kZeroStream, linear(dstDevice, host_address(srcHost), ByteCount, Expect::to_device)); })

FAKE_SYNC_ENTRY(cuMemcpyDtoH_v2, (void* dstHost, CUdeviceptr srcDevice, size_t ByteCount),
                { return copy_sync(drv, kZeroStream, linear(host_address(dstHost), srcDevice, ByteCount, Expect::to_host)); })

FAKE_SYNC_ENTRY(cuMemcpyDtoD_v2, (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount),
                { return copy_sync(drv, kZeroStream, linear(dstDevice, srcDevice, ByteCount, Expect::device_to_device)); })

FAKE_SYNC_ENTRY(cuMemcpyPeer, (CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext, size_t ByteCount), {
  (void)dstContext;
  (void)srcContext;
  return copy_sync(drv, kZeroStream, linear(dstDevice, srcDevice, ByteCount, Expect::device_to_device));
})

FAKE_SYNC_ENTRY(cuMemcpy2D_v2, (const CUDA_MEMCPY2D* pCopy), {
  CopyRequest request;
  if (CUresult status = request_2d(pCopy, request)) return status;
  return copy_sync(drv, kZeroStream, request);
})

FAKE_SYNC_ENTRY(cuMemcpy2DUnaligned_v2, (const CUDA_MEMCPY2D* pCopy), {
  CopyRequest request;
  if (CUresult status = request_2d(pCopy, request)) return status;
  return copy_sync(drv, kZeroStream, request);
})

FAKE_SYNC_ENTRY(cuMemcpy3D_v2, (const CUDA_MEMCPY3D* pCopy), {
  CopyRequest request;
  if (CUresult status = request_3d(pCopy, request)) return status;
  return copy_sync(drv, kZeroStream, request);
})

FAKE_SYNC_ENTRY(cuMemcpy3DPeer, (const CUDA_MEMCPY3D_PEER* pCopy), {
  CopyRequest request;
  if (CUresult status = request_3d(pCopy, request)) return status;
  return copy_sync(drv, kZeroStream, request);
})

// ---- asynchronous copies ----------------------------------------------------------------------

FAKE_STREAM_ENTRY(cuMemcpyAsync, (CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream),
                  { return copy_async(drv, StreamArg{hStream, kZeroStream}, linear(dst, src, ByteCount, Expect::any)); })

FAKE_STREAM_ENTRY(cuMemcpyHtoDAsync_v2, (CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount, CUstream hStream), {
  return copy_async(drv, StreamArg{hStream, kZeroStream}, linear(dstDevice, host_address(srcHost), ByteCount, Expect::to_device));
})

FAKE_STREAM_ENTRY(cuMemcpyDtoHAsync_v2, (void* dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream), {
  return copy_async(drv, StreamArg{hStream, kZeroStream}, linear(host_address(dstHost), srcDevice, ByteCount, Expect::to_host));
})

FAKE_STREAM_ENTRY(cuMemcpyDtoDAsync_v2, (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream), {
  return copy_async(drv, StreamArg{hStream, kZeroStream}, linear(dstDevice, srcDevice, ByteCount, Expect::device_to_device));
})

FAKE_STREAM_ENTRY(cuMemcpyPeerAsync, (CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext,
                                      size_t ByteCount, CUstream hStream), {
  (void)dstContext;
  (void)srcContext;
  return copy_async(drv, StreamArg{hStream, kZeroStream}, linear(dstDevice, srcDevice, ByteCount, Expect::device_to_device));
})

FAKE_STREAM_ENTRY(cuMemcpy2DAsync_v2, (const CUDA_MEMCPY2D* pCopy, CUstream hStream), {
  CopyRequest request;
  if (CUresult status = request_2d(pCopy, request)) return status;
  return copy_async(drv, StreamArg{hStream, kZeroStream}, request);
})

FAKE_STREAM_ENTRY(cuMemcpy3DAsync_v2, (const CUDA_MEMCPY3D* pCopy, CUstream hStream), {
  CopyRequest request;
  if (CUresult status = request_3d(pCopy, request)) return status;
  return copy_async(drv, StreamArg{hStream, kZeroStream}, request);
})

FAKE_STREAM_ENTRY(cuMemcpy3DPeerAsync, (const CUDA_MEMCPY3D_PEER* pCopy, CUstream hStream), {
  CopyRequest request;
  if (CUresult status = request_3d(pCopy, request)) return status;
  return copy_async(drv, StreamArg{hStream, kZeroStream}, request);
})

// ---- memsets ----------------------------------------------------------------------------------

FAKE_SYNC_ENTRY(cuMemsetD8_v2, (CUdeviceptr dstDevice, unsigned char uc, size_t N),
                { return memset_sync(drv, kZeroStream, dstDevice, N, 1, uc, N, 1); })
FAKE_SYNC_ENTRY(cuMemsetD16_v2, (CUdeviceptr dstDevice, unsigned short us, size_t N),
                { return memset_sync(drv, kZeroStream, dstDevice, N * 2, 2, us, N, 1); })
FAKE_SYNC_ENTRY(cuMemsetD32_v2, (CUdeviceptr dstDevice, unsigned int ui, size_t N),
                { return memset_sync(drv, kZeroStream, dstDevice, N * 4, 4, ui, N, 1); })
FAKE_SYNC_ENTRY(cuMemsetD2D8_v2, (CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height),
                { return memset_sync(drv, kZeroStream, dstDevice, dstPitch, 1, uc, Width, Height); })
FAKE_SYNC_ENTRY(cuMemsetD2D16_v2, (CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width, size_t Height),
                { return memset_sync(drv, kZeroStream, dstDevice, dstPitch, 2, us, Width, Height); })
FAKE_SYNC_ENTRY(cuMemsetD2D32_v2, (CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height),
                { return memset_sync(drv, kZeroStream, dstDevice, dstPitch, 4, ui, Width, Height); })

FAKE_STREAM_ENTRY(cuMemsetD8Async, (CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream),
                  { return memset_async(drv, StreamArg{hStream, kZeroStream}, dstDevice, N, 1, uc, N, 1); })
FAKE_STREAM_ENTRY(cuMemsetD16Async, (CUdeviceptr dstDevice, unsigned short us, size_t N, CUstream hStream),
                  { return memset_async(drv, StreamArg{hStream, kZeroStream}, dstDevice, N * 2, 2, us, N, 1); })
FAKE_STREAM_ENTRY(cuMemsetD32Async, (CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream),
                  { return memset_async(drv, StreamArg{hStream, kZeroStream}, dstDevice, N * 4, 4, ui, N, 1); })
FAKE_STREAM_ENTRY(cuMemsetD2D8Async, (CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height,
                                      CUstream hStream),
                  { return memset_async(drv, StreamArg{hStream, kZeroStream}, dstDevice, dstPitch, 1, uc, Width, Height); })
FAKE_STREAM_ENTRY(cuMemsetD2D16Async, (CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width, size_t Height,
                                       CUstream hStream),
                  { return memset_async(drv, StreamArg{hStream, kZeroStream}, dstDevice, dstPitch, 2, us, Width, Height); })
FAKE_STREAM_ENTRY(cuMemsetD2D32Async, (CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height,
                                       CUstream hStream),
                  { return memset_async(drv, StreamArg{hStream, kZeroStream}, dstDevice, dstPitch, 4, ui, Width, Height); })
