// The small parts of the shim: module image sizes, statistics, the toggle gate, the handle map,
// and the ldconfig cache reader used to find the real driver.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "real_driver.h"
#include "sluice/common/hash.h"
#include "sluice/shim/handle_map.h"
#include "sluice/shim/module_image.h"
#include "sluice/shim/stats.h"
#include "sluice/shim/toggle_gate.h"

namespace sluice::shim {
namespace {

template <typename T>
void put(std::vector<unsigned char>& bytes, std::size_t offset, T value) {
  if (bytes.size() < offset + sizeof value) bytes.resize(offset + sizeof value);
  std::memcpy(bytes.data() + offset, &value, sizeof value);
}

TEST(ModuleImage, TextEndsAtItsTerminator) {
  const char ptx[] = ".version 8.0\n.target sm_90\n";
  const ImageView view = image_view(ptx);
  EXPECT_EQ(view.data, static_cast<const void*>(ptx));
  EXPECT_EQ(view.size, sizeof ptx - 1);
  EXPECT_EQ(image_view("").size, 0u);
  EXPECT_EQ(image_view(nullptr).data, nullptr);
  EXPECT_EQ(image_hash(view), fnv1a(ptx, sizeof ptx - 1));
}

TEST(ModuleImage, FatbinSizeComesFromItsHeader) {
  std::vector<unsigned char> fatbin;
  put<std::uint32_t>(fatbin, 0, 0xBA55ED50u);
  put<std::uint16_t>(fatbin, 4, 1);
  put<std::uint16_t>(fatbin, 6, 16);
  put<std::uint64_t>(fatbin, 8, 100);
  fatbin.resize(116, 0xAB);
  EXPECT_EQ(image_view(fatbin.data()).size, 116u);

  // nvcc's wrapper points at the fatbin; the view is the fatbin itself.
  struct Wrapper {
    int magic;
    int version;
    const void* data;
    void* unused;
  } wrapper{0x466243B1, 1, fatbin.data(), nullptr};
  const ImageView view = image_view(&wrapper);
  EXPECT_EQ(view.data, static_cast<const void*>(fatbin.data()));
  EXPECT_EQ(view.size, 116u);
}

TEST(ModuleImage, ElfSizeCoversHeadersAndSections) {
  std::vector<unsigned char> elf(64, 0);
  std::memcpy(elf.data(),
              "\x7f"
              "ELF",
              4);
  elf[4] = 2;                            // 64-bit
  put<std::uint64_t>(elf, 0x28, 0x100);  // section headers at 0x100
  put<std::uint16_t>(elf, 0x3A, 0x40);   // of 64 bytes
  put<std::uint16_t>(elf, 0x3C, 2);      // two of them
  elf.resize(0x180, 0);
  // section 1: PROGBITS at 0x200, 0x80 bytes: the file ends at 0x280, past the headers
  put<std::uint32_t>(elf, 0x140 + 0x04, 1);
  put<std::uint64_t>(elf, 0x140 + 0x18, 0x200);
  put<std::uint64_t>(elf, 0x140 + 0x20, 0x80);
  elf.resize(0x280, 0);
  EXPECT_EQ(image_view(elf.data()).size, 0x280u);
  // a NOBITS section occupies no file space
  put<std::uint32_t>(elf, 0x140 + 0x04, 8);
  EXPECT_EQ(image_view(elf.data()).size, 0x180u);
}

TEST(Stats, ShardsOfAllThreadsAddUp) {
  Stats stats;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) stats.count_inline(OpKind::kernel);
      stats.count_held(OpKind::copy);
    });
  }
  for (auto& t : threads) t.join();
  stats.count_unmanaged(Sym::cuLaunchGridAsync);
  stats.count_unmanaged(Sym::cuLaunchGridAsync);
  EXPECT_TRUE(stats.note_unknown_proc("cuFutureThing"));
  EXPECT_FALSE(stats.note_unknown_proc("cuFutureThing"));
  const StatsSnapshot s = stats.snapshot();
  EXPECT_EQ(s.of(OpKind::kernel), 4000u);
  EXPECT_EQ(s.of(OpKind::copy), 4u);
  EXPECT_EQ(s.unmanaged_total, 2u);
  EXPECT_EQ(s.proc_unknown, 2u);

  const auto json = nlohmann::json::parse(stats.to_json("open"));
  EXPECT_EQ(json["launches"], 4000);
  EXPECT_EQ(json["copies"], 4);
  EXPECT_EQ(json["held"], 4);
  EXPECT_EQ(json["inline"], 4000);
  EXPECT_EQ(json["unmanaged_total"], 2);
  EXPECT_EQ(json["unmanaged"]["cuLaunchGridAsync"], 2);
  EXPECT_EQ(json["proc_unknown_names"], nlohmann::json::array({"cuFutureThing"}));
  EXPECT_EQ(json["gate"], "open");
  EXPECT_EQ(json["pid"], static_cast<long>(getpid()));
  for (const char* key : {"memsets", "module_loads", "uncaptured_kernels", "proc_queries", "deferred_errors",
                          "forced_releases", "export_table_queries", "ops"}) {
    EXPECT_TRUE(json.contains(key)) << key;
  }
}

TEST(Stats, TwoStatsObjectsOnOneThreadStayApart) {
  Stats a;
  Stats b;
  a.count_inline(OpKind::memset);
  b.count_inline(OpKind::memset);
  a.count_inline(OpKind::memset);
  EXPECT_EQ(a.snapshot().of(OpKind::memset), 2u);
  EXPECT_EQ(b.snapshot().of(OpKind::memset), 1u);
}

struct CountingListener final : GateListener {
  std::atomic<int> calls{0};
  void gate_changed() noexcept override { calls.fetch_add(1); }
};

TEST(ToggleGate, FlipsOnItsPeriodAndTellsTheListener) {
  CountingListener listener;
  {
    ToggleGate gate(listener, 2'000'000);
    EXPECT_TRUE(gate.admit(OpDesc{}));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (gate.flips() < 3 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_GE(gate.flips(), 3u);
    EXPECT_STREQ(gate.name(), "toggle");
  }
  EXPECT_GE(listener.calls.load(), 3);
}

TEST(ToggleGate, WithAPartitionRoutesEverySecondFlip) {
  CountingListener listener;
  ToggleGate plain(listener, 1'000'000);
  EXPECT_EQ(plain.needs() & kNeedRoute, 0u);
  ToggleGate gate(listener, 1'000'000, 16);
  EXPECT_NE(gate.needs() & kNeedRoute, 0u);
  bool saw_full = false, saw_partition = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(saw_full && saw_partition) && std::chrono::steady_clock::now() < deadline) {
    const std::uint64_t before = gate.flips();
    const std::uint32_t sms = gate.route_sms(OpDesc{});
    if (gate.flips() != before) continue;  // flipped while asked: the answer may be either
    EXPECT_EQ(sms, (before / 2) % 2 == 1 ? 16u : 0u) << "after " << before << " flips";
    (sms == 0 ? saw_full : saw_partition) = true;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  EXPECT_TRUE(saw_full);
  EXPECT_TRUE(saw_partition);
}

TEST(HandleMap, FindsWhatItInsertedAndSpillsWhenFull) {
  HandleMap<int> map(16);
  std::vector<int*> values;
  for (std::uintptr_t h = 1; h <= 40; ++h) {
    values.push_back(map.find_or_insert(reinterpret_cast<void*>(h * 8),
                                        [h](int& v) { v = static_cast<int>(h); }));
  }
  for (std::uintptr_t h = 1; h <= 40; ++h) {
    int* found = map.find(reinterpret_cast<void*>(h * 8));
    ASSERT_NE(found, nullptr);
    EXPECT_EQ(*found, static_cast<int>(h));
    EXPECT_EQ(found, values[h - 1]);
  }
  EXPECT_EQ(map.find(reinterpret_cast<void*>(41 * 8)), nullptr);
  EXPECT_EQ(map.find(nullptr), nullptr);
  int total = 0;
  map.for_each([&](int& v) { total += v; });
  EXPECT_EQ(total, 40 * 41 / 2);
}

TEST(RealDriver, ReadsTheLdconfigCache) {
  const auto libc = preload::ldconfig_cache_entries("/etc/ld.so.cache", "libc.so.6");
  ASSERT_FALSE(libc.empty());
  EXPECT_EQ(access(libc.front().c_str(), R_OK), 0) << libc.front();
  EXPECT_TRUE(preload::ldconfig_cache_entries("/etc/ld.so.cache", "libnothing.so.9").empty());
  EXPECT_TRUE(preload::ldconfig_cache_entries("/nonexistent", "libc.so.6").empty());
}

}  // namespace
}  // namespace sluice::shim
