#include "kill_writer.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "sluice/common/log.h"

namespace sluice::sched {

namespace {

// The few driver types and entry points used here, declared without cuda.h (their ABI is stable).
using CUresult = int;
using CUdevice = int;
using CUcontext = void*;
using CUstream = void*;
using CUdeviceptr = unsigned long long;  // NOLINT(google-runtime-int): the driver's type
struct CUipcMemHandle {
  char reserved[protocol::kIpcHandleBytes];
};
constexpr unsigned kStreamNonBlocking = 1;        // CU_STREAM_NON_BLOCKING
constexpr unsigned kIpcLazyEnablePeerAccess = 1;  // CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS

}  // namespace

struct KillWriter::Driver {
  void* handle = nullptr;
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*cuCtxSetCurrent)(CUcontext) = nullptr;
  CUresult (*cuStreamCreate)(CUstream*, unsigned) = nullptr;
  CUresult (*cuIpcOpenMemHandle)(CUdeviceptr*, CUipcMemHandle, unsigned) = nullptr;
  CUresult (*cuIpcCloseMemHandle)(CUdeviceptr) = nullptr;
  CUresult (*cuStreamWriteValue32)(CUstream, CUdeviceptr, std::uint32_t, unsigned) = nullptr;
  std::map<int, std::pair<CUcontext, CUstream>> devices;
  // The library stays loaded: unloading a driver while its threads run is not safe.
};

KillWriter::KillWriter(std::string driver_path) : driver_path_(std::move(driver_path)) {
  if (driver_path_.empty()) {
    const char* real = std::getenv("SLUICE_REAL_LIBCUDA");
    driver_path_ = real != nullptr && real[0] != '\0' ? real : "libcuda.so.1";
  }
}

KillWriter::~KillWriter() {
  if (!driver_) return;
  for (const auto& [key, word] : words_) driver_->cuIpcCloseMemHandle(word.base);
}

Status KillWriter::load() {
  if (driver_) return {};
  if (!load_error_.empty()) return make_error("{}", load_error_);
  auto fail = [&](std::string why) -> Status {
    load_error_ = fmt::format("{}: {}", driver_path_, why);
    return make_error("{}", load_error_);
  };
  auto driver = std::make_unique<Driver>();
  driver->handle = dlopen(driver_path_.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (driver->handle == nullptr) return fail(dlerror());
  auto resolve = [&](auto& fn, std::initializer_list<const char*> names) {
    for (const char* name : names) {
      if (void* address = dlsym(driver->handle, name)) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(address);
        return true;
      }
    }
    return false;
  };
  bool found =
      resolve(driver->cuInit, {"cuInit"}) && resolve(driver->cuDeviceGet, {"cuDeviceGet"}) &&
      resolve(driver->cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"}) &&
      resolve(driver->cuCtxSetCurrent, {"cuCtxSetCurrent"}) &&
      resolve(driver->cuStreamCreate, {"cuStreamCreate"}) &&
      resolve(driver->cuIpcOpenMemHandle, {"cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle"}) &&
      resolve(driver->cuIpcCloseMemHandle, {"cuIpcCloseMemHandle"}) &&
      resolve(driver->cuStreamWriteValue32, {"cuStreamWriteValue32_v2", "cuStreamWriteValue32"});
  if (!found) return fail("lacks an entry point kill words need");
  if (CUresult result = driver->cuInit(0); result != 0)
    return fail(fmt::format("cuInit failed ({})", result));
  driver_ = std::move(driver);
  log::info("kill words are written through {}", driver_path_);
  return {};
}

Status KillWriter::enter(int device) {
  auto it = driver_->devices.find(device);
  if (it == driver_->devices.end()) {
    CUdevice dev = 0;
    CUcontext ctx = nullptr;
    CUstream stream = nullptr;
    if (CUresult r = driver_->cuDeviceGet(&dev, device); r != 0) {
      return make_error("device {}: cuDeviceGet failed ({})", device, r);
    }
    if (CUresult r = driver_->cuDevicePrimaryCtxRetain(&ctx, dev); r != 0) {
      return make_error("device {}: cuDevicePrimaryCtxRetain failed ({})", device, r);
    }
    if (CUresult r = driver_->cuCtxSetCurrent(ctx); r != 0) {
      return make_error("device {}: cuCtxSetCurrent failed ({})", device, r);
    }
    if (CUresult r = driver_->cuStreamCreate(&stream, kStreamNonBlocking); r != 0) {
      return make_error("device {}: cuStreamCreate failed ({})", device, r);
    }
    it = driver_->devices.emplace(device, std::pair{ctx, stream}).first;
  }
  if (CUresult r = driver_->cuCtxSetCurrent(it->second.first); r != 0) {
    return make_error("device {}: cuCtxSetCurrent failed ({})", device, r);
  }
  return {};
}

Status KillWriter::add(std::uint32_t client, const protocol::KillWordMsg& word) {
  if (auto status = load(); !status) return status;
  if (auto status = enter(word.device); !status) return status;
  CUipcMemHandle handle{};
  std::memcpy(handle.reserved, word.ipc_handle, sizeof(handle.reserved));
  CUdeviceptr base = 0;
  if (CUresult r = driver_->cuIpcOpenMemHandle(&base, handle, kIpcLazyEnablePeerAccess); r != 0) {
    return make_error("client {} device {}: cuIpcOpenMemHandle failed ({})", client, word.device,
                      r);
  }
  auto key = std::pair{client, static_cast<int>(word.device)};
  if (auto old = words_.find(key); old != words_.end())
    driver_->cuIpcCloseMemHandle(old->second.base);
  words_[key] = Word{base, word.offset};
  return {};
}

void KillWriter::remove(std::uint32_t client) {
  for (auto it = words_.lower_bound({client, -1});
       it != words_.end() && it->first.first == client;) {
    if (driver_ && enter(it->first.second)) driver_->cuIpcCloseMemHandle(it->second.base);
    it = words_.erase(it);
  }
}

Status KillWriter::write(std::uint32_t client, int device, std::uint32_t value) {
  auto it = words_.find({client, device});
  if (it == words_.end() || !driver_) return {};
  if (auto status = enter(device); !status) return status;
  CUstream stream = driver_->devices.at(device).second;
  if (CUresult r =
          driver_->cuStreamWriteValue32(stream, it->second.base + it->second.offset, value, 0);
      r != 0) {
    return make_error("client {} device {}: cuStreamWriteValue32 failed ({})", client, device, r);
  }
  return {};
}

}  // namespace sluice::sched
