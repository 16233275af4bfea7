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
// Thread rules: every member may be called from any thread; one lock guards the index, and the
// objects are read on a thread of the object's own, without it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace sluice::shim {

// The files of the objects loaded in this process: /proc/self/exe and every shared library's path
// (dl_iterate_phdr), without the vDSO.
std::vector<std::string> loaded_object_files();

class EmbeddedPtx {
 public:
  using ObjectLister = std::function<std::vector<std::string>()>;

  // `objects` lists the files to read; objects not read before are read when ready() is asked.
  explicit EmbeddedPtx(ObjectLister objects = loaded_object_files);
  ~EmbeddedPtx();
  EmbeddedPtx(const EmbeddedPtx&) = delete;
  EmbeddedPtx& operator=(const EmbeddedPtx&) = delete;

  // True when every object `objects` lists has been read for `arch`. Otherwise starts reading
  // the others on a background thread, if none is reading, and says false: a framework's
  // libraries are gigabytes, which take seconds to read, and a launch must not wait for them.
  bool ready(std::uint32_t arch);
  // Waits until the background reading, if any, is done.
  void wait();
  // The process is exiting: the reading stops after the fatbin in hand, this waits for that, and
  // nothing is read from now on (the reader must not use what the exit destroys).
  void stop() noexcept;

  // The PTX for `arch` of the embedded fatbin whose kernels are exactly `kernels` (any order);
  // empty when none matches, when several with different PTX do, or when ready(arch) was not true.
  std::string find(std::vector<std::string> kernels, std::uint32_t arch);

  std::size_t objects_read();
  std::size_t modules_indexed();

 private:
  struct Module {
    std::string ptx;
    std::vector<std::string> kernels;  // sorted
  };
  // What one reading found; merged into the index under mu_ when it is done.
  struct Batch {
    std::vector<Module> modules;
  };

  static Batch read(const std::vector<std::string>& paths, std::uint32_t arch,
                    const std::atomic<bool>& stop);
  void add(Module module);  // under mu_

  ObjectLister objects_;
  std::mutex mu_;
  std::condition_variable done_;
  std::uint32_t arch_ = 0;  // of the index; guarded by mu_ like everything below
  bool reading_ = false;
  std::atomic<bool> stopping_{false};  // written under mu_
  std::set<std::string> read_;
  std::vector<Module> modules_;
  std::unordered_map<std::string, std::vector<std::size_t>> by_kernel_;
  std::thread reader_;
};

}  // namespace sluice::shim
