// Module images the fake driver understands (cuModuleLoadData*, cuLibraryLoadData, ...):
//
//  * the fake's text format: a first line "# sluice fake module v1", then one declaration a line:
//        kernel <name> params=<size>,<size>,... [duration_us=<n>] [op=<builtin>|host] [tag=<index>]
//        global <name> <bytes>
//    Other lines starting with '#' and blank lines are ignored.
//  * PTX text: every .entry becomes a kernel with the parameter sizes of its .param list; entries
//    named sluice_spin* run the builtin spin op, all others noop. Module-scope .global and .const
//    variables are globals.
//  * anything else (cubin, fatbin): a module without kernels.
//
// Parameters are laid out like the CUDA ABI: each at the next multiple of its alignment (the
// explicit .align of PTX; otherwise the largest power of two dividing its size, at most 8).
//
// Pure functions, no driver state: safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/common/result.h"

namespace sluice::fake {

enum class KernelOp : std::uint8_t { noop, fill_u32, affine_u32, append_u32, copy, spin, host };

std::string_view kernel_op_name(KernelOp op);

struct ParamDesc {
  std::string name;
  std::size_t offset = 0;
  std::size_t size = 0;
};

struct KernelDesc {
  std::string name;
  std::vector<ParamDesc> params;
  std::size_t param_bytes = 0;           // size of the parameter buffer
  KernelOp op = KernelOp::noop;
  std::optional<std::uint64_t> duration_ns;
  std::optional<std::size_t> tag_param;  // index of the parameter traced as the tag
  // Kill instrumentation (docs/architecture.md): the last parameter is __sluice_launch and the
  // module has a __sluice_kill_flag global.
  bool killable = false;
};

struct GlobalDesc {
  std::string name;
  std::size_t bytes = 0;
};

enum class ImageFormat : std::uint8_t { fake_text, ptx, binary };

struct ModuleImage {
  ImageFormat format = ImageFormat::binary;
  std::vector<std::shared_ptr<const KernelDesc>> kernels;
  std::vector<GlobalDesc> globals;
};

// Parses an image given as the driver receives it: a pointer, NUL-terminated for text formats.
// `origin` names the image in error messages (a file name, or "image").
Result<ModuleImage> parse_module_image(const void* image, std::string_view origin);

// The same for text already known to be one of the two text formats.
Result<ModuleImage> parse_fake_module(std::string_view text, std::string_view origin);
Result<ModuleImage> parse_ptx_module(std::string_view text, std::string_view origin);

// Lays out parameters of the given sizes and alignments (0: natural) and returns the buffer size.
std::size_t layout_params(std::vector<ParamDesc>& params, const std::vector<std::size_t>& aligns);

}  // namespace sluice::fake
