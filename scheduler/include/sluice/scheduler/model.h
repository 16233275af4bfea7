// The online duration model: predicted GPU time of an operation, learned from a sample of
// operations that clients time with events (SampleMsg).
//
// Keyed by identity (a kernel's fnv1a(name, seed = module hash), or a pseudo identity for copies,
// memsets and graphs) and by size bucket floor(log2(work)), work = blocks or bytes. Each bucket
// keeps a running mean that weighs the newest samples more once it has a few. A size that was not
// timed yet is predicted conservatively from the nearest timed bucket: a larger size scales the
// duration up linearly, a smaller one keeps it (never guesses shorter than what was seen).
//
// Thread rules: not thread-safe; owned by the scheduler's thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <unordered_map>

namespace sluice::sched {

class DurationModel {
 public:
  // Samples after which a bucket's mean moves by 1/kWindow of each new sample's difference.
  static constexpr std::uint32_t kWindow = 8;
  static constexpr std::size_t kMaxIdentities = 1 << 16;

  // Records one timed operation. Returns false when the model is full and ignored a new identity.
  bool observe(std::uint64_t identity, std::uint64_t work, std::uint64_t duration_ns);

  // Predicted duration, or nullopt when the identity was never timed.
  std::optional<std::uint64_t> predict(std::uint64_t identity, std::uint64_t work) const;

  // The mean of one bucket, if timed.
  std::optional<std::uint64_t> bucket_mean(std::uint64_t identity, std::uint32_t bucket) const;

  // The largest bucket mean of an identity (0 when never timed): the fallback the shim uses for
  // sizes it has no prediction for.
  std::uint64_t largest_mean(std::uint64_t identity) const;

  std::uint64_t samples(std::uint64_t identity) const;
  std::size_t identities() const { return kernels_.size(); }

 private:
  struct Bucket {
    double mean_ns = 0;
    std::uint64_t samples = 0;
  };
  struct Kernel {
    std::map<std::uint32_t, Bucket> buckets;
    std::uint64_t samples = 0;
  };
  std::unordered_map<std::uint64_t, Kernel> kernels_;
};

}  // namespace sluice::sched
