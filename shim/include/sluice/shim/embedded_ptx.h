// The PTX of fatbins embedded in the program and the shared libraries loaded in this process
// (docs/architecture.md, "Modules the runtime loads itself").
//
// The CUDA runtime registers the fatbins linked into a program or a library (an extension built
// with nvcc) through the driver's private export table, so no module load the shim hooks hands it
// their images. Their bytes are still in the objects' .nv_fatbin sections, on disk. A module met
// without an image gets the PTX of the one embedded fatbin whose kernels are exactly the module's
// kernels; when none or several different ones match, it gets none, so a twin is never built from
// another module's code.
//
// Thread rules: none; the caller serializes (Twins calls it under its lock).
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace sluice::shim {

// The files of the objects loaded in this process: /proc/self/exe and every shared library's path
// (dl_iterate_phdr), without the vDSO.
std::vector<std::string> loaded_object_files();

class EmbeddedPtx {
 public:
  using ObjectLister = std::function<std::vector<std::string>()>;

  // `objects` lists the files to read; objects not read before are read at each lookup.
  explicit EmbeddedPtx(ObjectLister objects = loaded_object_files);

  // The PTX for `arch` of the embedded fatbin whose kernels are exactly `kernels` (any order);
  // empty when none matches, or when several with different PTX do.
  std::string find(std::vector<std::string> kernels, std::uint32_t arch);

  std::size_t objects_read() const { return read_.size(); }
  std::size_t modules_indexed() const { return modules_.size(); }

 private:
  struct Module {
    std::string ptx;
    std::vector<std::string> kernels;  // sorted
  };

  void read_new_objects(std::uint32_t arch);
  void add(std::string ptx);

  ObjectLister objects_;
  std::uint32_t arch_ = 0;
  std::set<std::string> read_;
  std::vector<Module> modules_;
  std::unordered_map<std::string, std::vector<std::size_t>> by_kernel_;
};

}  // namespace sluice::shim
