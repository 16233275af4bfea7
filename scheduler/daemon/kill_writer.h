// sluiced's side of kills: writes clients' kill words (docs/architecture.md, kill instrumentation)
// through the IPC handles they registered (KillWordMsg), with cuStreamWriteValue32 on a stream of
// its own per device. The CUDA driver is loaded with dlopen on the first registration only, so a
// daemon whose clients register no kill word never loads it (and CI runs it on the fake driver).
//
// Thread rules: one thread (sluiced's loop). Writes are asynchronous: nothing here waits for the
// GPU.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "sluice/common/result.h"
#include "sluice/protocol/layout.h"

namespace sluice::sched {

class KillWriter {
 public:
  // `driver_path` empty: $SLUICE_REAL_LIBCUDA, else libcuda.so.1.
  explicit KillWriter(std::string driver_path = {});
  ~KillWriter();
  KillWriter(const KillWriter&) = delete;
  KillWriter& operator=(const KillWriter&) = delete;

  // Maps the client's kill word of `device` (replacing an earlier one). Errors name the step.
  Status add(std::uint32_t client, const protocol::KillWordMsg& word);
  // Unmaps every kill word of the client (it disconnected).
  void remove(std::uint32_t client);
  bool has(std::uint32_t client, int device) const { return words_.count({client, device}) != 0; }
  // Writes `value` to the client's kill word of `device`, if it registered one.
  Status write(std::uint32_t client, int device, std::uint32_t value);

  struct Driver;

 private:
  Status load();
  Status enter(int device);  // makes the device's context current

  std::string driver_path_;
  std::unique_ptr<Driver> driver_;
  std::string load_error_;  // a failed load is not retried
  struct Word {
    std::uint64_t base = 0;  // CUdeviceptr of the opened allocation
    std::uint64_t offset = 0;
  };
  std::map<std::pair<std::uint32_t, int>, Word> words_;
};

}  // namespace sluice::sched
