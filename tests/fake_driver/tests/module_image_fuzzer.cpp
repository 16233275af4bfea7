// libFuzzer harness of the fake driver's module image parser (src/module_image.h): any bytes a
// program hands to cuModuleLoadData either parse or give an error, without crashing.
#include <cstddef>
#include <cstdint>
#include <string>

#include "module_image.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The driver receives a pointer; text images end at their NUL.
  std::string image(reinterpret_cast<const char*>(data), size);
  auto parsed = sluice::fake::parse_module_image(image.c_str(), "fuzz");
  if (parsed) {
    for (const auto& kernel : parsed->kernels) {
      std::size_t end = 0;
      for (const auto& param : kernel->params) end = param.offset + param.size;
      if (end > kernel->param_bytes) __builtin_trap();  // the layout must fit the buffer
    }
  }
  return 0;
}
