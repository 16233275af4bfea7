// How fast sluiced takes launch descriptors, and what it costs: an in-process sluiced serves 16
// clients that each made the real handshake (Unix socket, SO_PEERCRED, memfd, doorbells) and then
// push descriptors into their rings from their own threads at a fixed total rate. Reported: descriptors ingested per second and the daemon thread's CPU time per second
// of wall time (cores). Some clients may be RT (their rings are polled rather than rung).
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "../client/connection.h"
#include "sluice/common/clock.h"
#include "sluice/protocol/doorbell.h"
#include "sluice/protocol/wire.h"
#include "sluice/scheduler/server.h"

namespace {

using namespace sluice;

constexpr int kClients = 16;

std::uint64_t thread_cpu_ns(pthread_t thread) {
  clockid_t clock;
  if (pthread_getcpuclockid(thread, &clock) != 0) return 0;
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

protocol::OpMsg descriptor(std::uint64_t seq) {
  protocol::OpMsg op{};
  op.type = static_cast<std::uint16_t>(protocol::MsgType::op);
  op.kind = protocol::OpKind::kernel;
  op.state = protocol::OpState::submitted;
  op.device = 0;
  op.seq = seq;
  op.stream = 0x10;
  op.kernel_id = 0x1000 + seq % 32;  // a model's worth of distinct kernels
  op.grid[0] = 132;
  op.grid[1] = op.grid[2] = 1;
  op.block[0] = 256;
  op.block[1] = op.block[2] = 1;
  op.call_ns = now_ns();
  op.submit_ns = op.call_ns;
  op.predicted_ns = 20'000;
  return op;
}

// Args: total rate (descriptors/s), RT clients among the 16.
void BM_Ingest(benchmark::State& state) {
  const auto rate = static_cast<std::uint64_t>(state.range(0));
  const auto rt_clients = static_cast<int>(state.range(1));
  const std::uint64_t run_ns = 1'000'000'000;
  std::string dir = std::filesystem::temp_directory_path() / ("sluice-bench-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string policy = dir + "/policy.json";
  {
    std::FILE* f = std::fopen(policy.c_str(), "w");
    std::fputs(R"({"version": 1, "rules": [{"match": {"label": "rt"}, "class": "rt"}], "defaults": {"class": "be"}})", f);
    std::fclose(f);
  }
  sched::ServerOptions options;
  options.socket_path = dir + "/sluiced.sock";
  options.policy_path = policy;
  options.devices = {0};
  auto server = sched::Server::start(options);
  if (!server) {
    state.SkipWithError(server.error().message.c_str());
    return;
  }
  std::thread daemon([&] { (void)(*server)->run(); });

  for (auto _ : state) {
    std::vector<std::unique_ptr<sched::Connection>> connections;
    for (int i = 0; i < kClients; ++i) {
      protocol::Hello hello{};
      hello.magic = protocol::kMagic;
      hello.abi_major = protocol::kAbiMajor;
      hello.abi_minor = protocol::kAbiMinor;
      hello.role = protocol::Role::shim;
      hello.pid = static_cast<std::uint32_t>(getpid());
      std::snprintf(hello.label, sizeof(hello.label), "%s", i < rt_clients ? "rt" : "be");
      auto connection = sched::connect_to_daemon({options.socket_path}, hello);
      if (!connection) {
        state.SkipWithError(connection.error().message.c_str());
        break;
      }
      connections.push_back(std::move(*connection));
    }
    if (connections.size() != kClients) break;
    std::atomic<std::uint64_t> pushed{0}, dropped{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> producers;
    for (auto& connection : connections) {
      producers.emplace_back([&, c = connection.get()] {
        while (!go.load()) std::this_thread::yield();
        // Launches come in bursts: every 500 us a client pushes what is due since its last burst.
        const std::uint64_t start = now_ns();
        const double per_client_per_ns = static_cast<double>(rate) / kClients / 1e9;
        std::uint64_t seq = 0;
        for (;;) {
          std::uint64_t now = now_ns();
          if (now - start >= run_ns) break;
          auto due = static_cast<std::uint64_t>(static_cast<double>(now - start) * per_client_per_ns);
          for (; seq < due; ++seq) {
            if (c->to_daemon.push(descriptor(seq + 1)) == protocol::RingResult::ok) {
              pushed.fetch_add(1, std::memory_order_relaxed);
            } else {
              dropped.fetch_add(1, std::memory_order_relaxed);
            }
          }
          if (c->to_daemon.should_ring()) protocol::ring_doorbell(c->doorbell_to_daemon);
          std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
      });
    }
    std::uint64_t cpu0 = thread_cpu_ns(daemon.native_handle());
    std::uint64_t wall0 = now_ns();
    go.store(true);
    for (auto& producer : producers) producer.join();
    // Until the daemon has taken everything in the rings.
    auto drained = [&] {
      for (auto& c : connections) {
        if (c->to_daemon.free_slots() != protocol::kToDaemonSlots) return false;
      }
      return true;
    };
    while (!drained() && now_ns() - wall0 < 10 * run_ns) std::this_thread::sleep_for(std::chrono::microseconds(100));
    std::uint64_t wall = now_ns() - wall0;
    std::uint64_t cpu = thread_cpu_ns(daemon.native_handle()) - cpu0;
    state.SetIterationTime(static_cast<double>(wall) / 1e9);
    state.counters["descriptors_per_s"] = static_cast<double>(pushed.load()) * 1e9 / static_cast<double>(wall);
    state.counters["daemon_cpu_cores"] = static_cast<double>(cpu) / static_cast<double>(wall);
    state.counters["daemon_cpu_ns_per_descriptor"] = static_cast<double>(cpu) / static_cast<double>(std::max<std::uint64_t>(pushed.load(), 1));
    state.counters["dropped_ring_full"] = static_cast<double>(dropped.load());
    connections.clear();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the daemon see the hang-ups
  }
  (*server)->stop();
  daemon.join();
  std::filesystem::remove_all(dir);
}

BENCHMARK(BM_Ingest)
    ->ArgNames({"rate", "rt_clients"})
    ->Args({200'000, 0})
    ->Args({200'000, 2})
    ->Args({400'000, 2})
    ->Args({800'000, 2})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
