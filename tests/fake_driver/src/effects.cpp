#include "effects.h"

#include <algorithm>
#include <cstring>

#include "sluice/common/log.h"

namespace sluice::fake {
namespace {

template <typename T>
T* at(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// The bytes from the first to the last byte a strided copy or memset touches.
std::size_t strided_extent(std::size_t width, std::size_t height, std::size_t depth, std::size_t pitch,
                           std::size_t slice) {
  if (width == 0 || height == 0 || depth == 0) return 0;
  return (depth - 1) * slice + (height - 1) * pitch + width;
}

CUresult prepare_kernel(Driver& drv, const KernelWork& kernel, EffectPlan& plan) {
  const KernelDesc& desc = *kernel.desc;
  for (const ParamDesc& param : desc.params) {
    plan.param_offsets.push_back(param.offset);
    plan.param_sizes.push_back(param.size);
  }
  auto touch = [&](std::uint64_t address, std::uint64_t bytes) {
    return bytes == 0 || device_accessible(drv, static_cast<std::uintptr_t>(address), static_cast<std::size_t>(bytes));
  };
  switch (desc.op) {
    case KernelOp::noop:
    case KernelOp::spin:
      return CUDA_SUCCESS;
    case KernelOp::fill_u32:
      return touch(kernel_param(kernel, 0), kernel_param(kernel, 2) * 4) ? CUDA_SUCCESS : CUDA_ERROR_ILLEGAL_ADDRESS;
    case KernelOp::affine_u32:
      return touch(kernel_param(kernel, 0), kernel_param(kernel, 3) * 4) ? CUDA_SUCCESS : CUDA_ERROR_ILLEGAL_ADDRESS;
    case KernelOp::copy:
      return touch(kernel_param(kernel, 0), kernel_param(kernel, 2)) && touch(kernel_param(kernel, 1), kernel_param(kernel, 2))
                 ? CUDA_SUCCESS
                 : CUDA_ERROR_ILLEGAL_ADDRESS;
    case KernelOp::append_u32: {
      const auto log = static_cast<std::uintptr_t>(kernel_param(kernel, 0));
      Allocation* allocation = drv.memory.find(log, 4);
      if (allocation == nullptr || !device_accessible(drv, log, 4)) return CUDA_ERROR_ILLEGAL_ADDRESS;
      plan.append_limit = allocation->base + allocation->size;
      return CUDA_SUCCESS;
    }
    case KernelOp::host: {
      auto it = drv.host_kernels.find(desc.name);
      if (it == drv.host_kernels.end()) {
        log::error("fake driver: kernel {} has op=host but no host kernel is registered under that name", desc.name);
        return CUDA_ERROR_LAUNCH_FAILED;
      }
      plan.host = it->second;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_SUCCESS;
}

CUresult apply_kernel(const Op& op, const KernelWork& kernel, const EffectPlan& plan) {
  switch (kernel.desc->op) {
    case KernelOp::noop:
    case KernelOp::spin:
      return CUDA_SUCCESS;
    case KernelOp::fill_u32: {
      auto* data = at<std::uint32_t>(kernel_param(kernel, 0));
      const auto value = static_cast<std::uint32_t>(kernel_param(kernel, 1));
      const auto count = kernel_param(kernel, 2);
      for (std::uint64_t i = 0; i < count; ++i) data[i] = value;
      return CUDA_SUCCESS;
    }
    case KernelOp::affine_u32: {
      auto* data = at<std::uint32_t>(kernel_param(kernel, 0));
      const auto mul = static_cast<std::uint32_t>(kernel_param(kernel, 1));
      const auto add = static_cast<std::uint32_t>(kernel_param(kernel, 2));
      const auto count = kernel_param(kernel, 3);
      for (std::uint64_t i = 0; i < count; ++i) data[i] = data[i] * mul + add;
      return CUDA_SUCCESS;
    }
    case KernelOp::append_u32: {
      auto* log = at<std::uint32_t>(kernel_param(kernel, 0));
      const std::uint32_t index = log[0];
      const std::uintptr_t slot = reinterpret_cast<std::uintptr_t>(log + 1 + index);
      if (slot + 4 > plan.append_limit) return CUDA_ERROR_ILLEGAL_ADDRESS;
      log[1 + index] = static_cast<std::uint32_t>(kernel_param(kernel, 1));
      log[0] = index + 1;
      return CUDA_SUCCESS;
    }
    case KernelOp::copy:
      std::memmove(at<void>(kernel_param(kernel, 0)), at<const void>(kernel_param(kernel, 1)),
                   static_cast<std::size_t>(kernel_param(kernel, 2)));
      return CUDA_SUCCESS;
    case KernelOp::host: {
      sluice_fake_launch launch{};
      launch.kernel = kernel.desc->name.c_str();
      launch.params = kernel.params.data();
      launch.param_offsets = plan.param_offsets.data();
      launch.param_sizes = plan.param_sizes.data();
      launch.param_count = plan.param_offsets.size();
      for (int i = 0; i < 3; ++i) {
        launch.grid[i] = kernel.grid[i];
        launch.block[i] = kernel.block[i];
      }
      launch.shared_mem_bytes = kernel.shared_mem;
      launch.sm_count = op.sms.count();
      launch.device = op.device != nullptr ? op.device->ordinal : 0;
      launch.stream_id = op.stream_id;
      int result = plan.host.fn(&launch, plan.host.user);
      return static_cast<CUresult>(result);
    }
  }
  return CUDA_SUCCESS;
}

void apply_copy(const CopyWork& copy) {
  const std::uint8_t* source = copy.staged ? copy.staged->data() : at<const std::uint8_t>(copy.src);
  // A staged source is packed: rows of `width`, slices of width * height.
  const std::size_t src_pitch = copy.staged ? copy.width : copy.src_pitch;
  const std::size_t src_slice = copy.staged ? copy.width * copy.height : copy.src_slice;
  for (std::size_t z = 0; z < copy.depth; ++z) {
    for (std::size_t y = 0; y < copy.height; ++y) {
      std::memmove(at<std::uint8_t>(copy.dst + z * copy.dst_slice + y * copy.dst_pitch),
                   source + z * src_slice + y * src_pitch, copy.width);
    }
  }
}

void apply_memset(const MemsetWork& memset) {
  for (std::size_t y = 0; y < memset.height; ++y) {
    std::uintptr_t row = memset.dst + y * memset.pitch;
    switch (memset.element_size) {
      case 1:
        std::memset(at<void>(row), static_cast<int>(memset.value & 0xff), memset.width);
        break;
      case 2:
        for (std::size_t i = 0; i < memset.width; ++i) at<std::uint16_t>(row)[i] = static_cast<std::uint16_t>(memset.value);
        break;
      default:
        for (std::size_t i = 0; i < memset.width; ++i) at<std::uint32_t>(row)[i] = memset.value;
        break;
    }
  }
}

}  // namespace

std::uint64_t kernel_param(const KernelWork& kernel, std::size_t index) {
  const auto& params = kernel.desc->params;
  if (index >= params.size()) return 0;
  std::uint64_t value = 0;
  std::size_t size = std::min<std::size_t>(params[index].size, sizeof(value));
  if (params[index].offset + size <= kernel.params.size()) {
    std::memcpy(&value, kernel.params.data() + params[index].offset, size);
  }
  return value;
}

Wave next_wave(Driver& drv, KernelWork& kernel, unsigned sm_count) {
  const std::uint64_t blocks = kernel.blocks();
  const std::uint64_t sms = std::max(1u, sm_count);
  const KernelDesc& desc = *kernel.desc;
  const std::uint64_t waves = (blocks + sms - 1) / sms;
  const std::uint64_t wave_ns = desc.op == KernelOp::spin ? kernel_param(kernel, 0) : desc.duration_ns.value_or(0) / waves;
  // The launch parameter: the record's address, bit 0 set for a resume launch (it never reads the
  // kill word).
  const std::uint64_t launch = kernel_param(kernel, desc.params.size() - 1);
  const bool resume = (launch & 1) != 0;
  const auto record = static_cast<std::uintptr_t>(launch & ~std::uint64_t{1});
  if (record != 0 && !device_accessible(drv, record, 8 + 4 * ((blocks + 31) / 32))) return {0, CUDA_ERROR_ILLEGAL_ADDRESS};
  while (kernel.next_block < blocks) {
    // All blocks of a wave start together: one look at the kill word for the wave.
    bool kill = false;
    if (kernel.kill_flag != 0 && !resume) {
      if (!device_accessible(drv, kernel.kill_flag, 8)) return {0, CUDA_ERROR_ILLEGAL_ADDRESS};
      const auto word = static_cast<std::uintptr_t>(__atomic_load_n(at<std::uint64_t>(kernel.kill_flag), __ATOMIC_SEQ_CST));
      if (word != 0) {
        if (!device_accessible(drv, word, 4)) return {0, CUDA_ERROR_ILLEGAL_ADDRESS};
        kill = __atomic_load_n(at<std::uint32_t>(word), __ATOMIC_SEQ_CST) != 0;
      }
    }
    const std::uint64_t end = std::min(blocks, kernel.next_block + sms);
    std::uint64_t running = 0;
    for (std::uint64_t block = kernel.next_block; block < end; ++block) {
      if (record == 0) {  // an untracked launch: every block runs
        ++running;
        continue;
      }
      auto* done = at<std::uint32_t>(record + 8 + 4 * (block / 32));
      const std::uint32_t bit = 1u << (block % 32);
      if ((__atomic_load_n(done, __ATOMIC_SEQ_CST) & bit) != 0) continue;
      if (kill) {
        __atomic_store_n(at<std::uint32_t>(record), 1u, __ATOMIC_SEQ_CST);
        continue;
      }
      __atomic_fetch_or(done, bit, __ATOMIC_SEQ_CST);
      ++running;
    }
    kernel.next_block = end;
    if (running > 0) return {wave_ns, CUDA_SUCCESS};
  }
  return {};
}

CUresult prepare_effect(Driver& drv, const Op& op, EffectPlan& plan) {
  if (const auto* kernel = std::get_if<KernelWork>(&op.spec.work)) return prepare_kernel(drv, *kernel, plan);
  if (const auto* copy = std::get_if<CopyWork>(&op.spec.work)) {
    if (copy->check_dst &&
        !device_accessible(drv, copy->dst, strided_extent(copy->width, copy->height, copy->depth, copy->dst_pitch, copy->dst_slice))) {
      return CUDA_ERROR_ILLEGAL_ADDRESS;
    }
    if (copy->check_src && !copy->staged &&
        !device_accessible(drv, copy->src, strided_extent(copy->width, copy->height, copy->depth, copy->src_pitch, copy->src_slice))) {
      return CUDA_ERROR_ILLEGAL_ADDRESS;
    }
    return CUDA_SUCCESS;
  }
  if (const auto* memset = std::get_if<MemsetWork>(&op.spec.work)) {
    std::size_t row_bytes = memset->width * memset->element_size;
    if (!device_accessible(drv, memset->dst, strided_extent(row_bytes, memset->height, 1, memset->pitch, 0))) {
      return CUDA_ERROR_ILLEGAL_ADDRESS;
    }
  }
  return CUDA_SUCCESS;
}

CUresult apply_effect(const Op& op, const EffectPlan& plan) {
  if (plan.skip) return CUDA_SUCCESS;
  if (const auto* kernel = std::get_if<KernelWork>(&op.spec.work)) return apply_kernel(op, *kernel, plan);
  if (const auto* copy = std::get_if<CopyWork>(&op.spec.work)) apply_copy(*copy);
  if (const auto* memset = std::get_if<MemsetWork>(&op.spec.work)) apply_memset(*memset);
  return CUDA_SUCCESS;
}

bool slow_effect(const Op& op, const EffectPlan& plan) {
  constexpr std::uint64_t kSlowBytes = 64 * 1024;
  if (plan.skip) return false;
  if (plan.host.fn != nullptr) return true;
  if (const auto* kernel = std::get_if<KernelWork>(&op.spec.work)) {
    switch (kernel->desc->op) {
      case KernelOp::fill_u32: return kernel_param(*kernel, 2) * 4 >= kSlowBytes;
      case KernelOp::affine_u32: return kernel_param(*kernel, 3) * 4 >= kSlowBytes;
      case KernelOp::copy: return kernel_param(*kernel, 2) >= kSlowBytes;
      default: return false;
    }
  }
  return op.spec.bytes >= kSlowBytes;  // copies and memsets
}

CUresult run_mem_write(Driver& drv, const MemWriteWork& write) {
  if (!device_accessible(drv, write.address, write.wide ? 8 : 4)) return CUDA_ERROR_ILLEGAL_ADDRESS;
  if (write.wide) {
    __atomic_store_n(at<std::uint64_t>(write.address), write.value, __ATOMIC_SEQ_CST);
  } else {
    __atomic_store_n(at<std::uint32_t>(write.address), static_cast<std::uint32_t>(write.value), __ATOMIC_SEQ_CST);
  }
  return CUDA_SUCCESS;
}

bool mem_wait_satisfied(const MemWaitWork& wait) {
  const unsigned condition = wait.flags & ~static_cast<unsigned>(CU_STREAM_WAIT_VALUE_FLUSH);
  std::uint64_t current = 0;
  std::uint64_t value = wait.value;
  if (wait.wide) {
    current = __atomic_load_n(at<std::uint64_t>(wait.address), __ATOMIC_SEQ_CST);
  } else {
    current = __atomic_load_n(at<std::uint32_t>(wait.address), __ATOMIC_SEQ_CST);
    value &= 0xffffffffu;
  }
  switch (condition) {
    case CU_STREAM_WAIT_VALUE_GEQ:
      return wait.wide ? static_cast<std::int64_t>(current - value) >= 0
                       : static_cast<std::int32_t>(static_cast<std::uint32_t>(current - value)) >= 0;
    case CU_STREAM_WAIT_VALUE_EQ:
      return current == value;
    case CU_STREAM_WAIT_VALUE_AND:
      return (current & value) != 0;
    case CU_STREAM_WAIT_VALUE_NOR: {
      std::uint64_t nor = ~(current | value);
      return (wait.wide ? nor : nor & 0xffffffffu) != 0;
    }
    default:
      return true;
  }
}

}  // namespace sluice::fake
