#include "sluice/scheduler/model.h"

#include <algorithm>
#include <cmath>

#include "sluice/protocol/layout.h"

namespace sluice::sched {

bool DurationModel::observe(std::uint64_t identity, std::uint64_t work, std::uint64_t duration_ns) {
  auto it = kernels_.find(identity);
  if (it == kernels_.end()) {
    if (kernels_.size() >= kMaxIdentities) return false;
    it = kernels_.emplace(identity, Kernel{}).first;
  }
  Bucket& bucket = it->second.buckets[protocol::size_bucket(work)];
  ++bucket.samples;
  ++it->second.samples;
  auto weight = static_cast<double>(std::min<std::uint64_t>(bucket.samples, kWindow));
  bucket.mean_ns += (static_cast<double>(duration_ns) - bucket.mean_ns) / weight;
  return true;
}

std::optional<std::uint64_t> DurationModel::predict(std::uint64_t identity, std::uint64_t work) const {
  auto it = kernels_.find(identity);
  if (it == kernels_.end() || it->second.buckets.empty()) return std::nullopt;
  const auto& buckets = it->second.buckets;
  std::uint32_t wanted = protocol::size_bucket(work);
  if (auto exact = buckets.find(wanted); exact != buckets.end()) {
    return static_cast<std::uint64_t>(std::llround(exact->second.mean_ns));
  }
  // Nearest timed bucket; prefer the larger one on a tie (it never predicts shorter).
  auto above = buckets.lower_bound(wanted);
  auto nearest = above;
  if (above == buckets.end() ||
      (above != buckets.begin() && wanted - std::prev(above)->first < above->first - wanted)) {
    nearest = std::prev(above);
  }
  double mean = nearest->second.mean_ns;
  if (nearest->first < wanted) mean = std::ldexp(mean, static_cast<int>(wanted - nearest->first));
  return static_cast<std::uint64_t>(std::llround(mean));
}

std::optional<std::uint64_t> DurationModel::bucket_mean(std::uint64_t identity, std::uint32_t bucket) const {
  auto it = kernels_.find(identity);
  if (it == kernels_.end()) return std::nullopt;
  auto found = it->second.buckets.find(bucket);
  if (found == it->second.buckets.end()) return std::nullopt;
  return static_cast<std::uint64_t>(std::llround(found->second.mean_ns));
}

std::uint64_t DurationModel::largest_mean(std::uint64_t identity) const {
  auto it = kernels_.find(identity);
  if (it == kernels_.end()) return 0;
  double largest = 0;
  for (const auto& [bucket, stats] : it->second.buckets) largest = std::max(largest, stats.mean_ns);
  return static_cast<std::uint64_t>(std::llround(largest));
}

std::uint64_t DurationModel::samples(std::uint64_t identity) const {
  auto it = kernels_.find(identity);
  return it == kernels_.end() ? 0 : it->second.samples;
}

}  // namespace sluice::sched
