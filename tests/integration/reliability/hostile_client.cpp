// sluice-hostile-client: connects to sluiced exactly as the shim does (hello, welcome, the memfd
// segment), then misbehaves in one of several ways, each on a connection of its own:
//
//   garbage    random bytes in every slot it publishes
//   forged     well-typed messages with forged fields: unknown types and kinds, device ordinals
//              out of range, names whose chunks overrun, zero and huge grids, seq going backwards,
//              statuses claiming absurd work, kill words with made-up IPC handles
//   head       a wild head index on its ring to sluiced (far ahead, then behind the tail)
//   tail       a wild tail index on sluiced's ring to it, and random bytes over the segment header
//              and the prediction table (both are sluiced's to write)
//   shrink     truncates the segment's memfd (reopened through /proc/self/map_files, which needs
//              root) under sluiced's mapping, then keeps publishing; sluiced seals the memfd, so
//              the truncation must fail
//
//   sluice-hostile-client SOCKET MODE... [--seed N] [--messages N]
//
// After each mode it waits (bounded) until sluiced hangs up on it, and prints one JSON line per
// mode: {"mode", "published", "evicted", "seconds"}. sluiced must evict the garbage, forged and
// head connections with a logged reason and keep serving everyone else; it may keep a `tail`
// connection (that only hurts the client itself) but must not crash. Exit status 0 unless the
// connection itself failed.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "connection.h"
#include "sluice/protocol/doorbell.h"
#include "sluice/protocol/wire.h"

namespace {

using namespace sluice;
using Clock = std::chrono::steady_clock;

struct Hostile {
  std::unique_ptr<sched::Connection> connection;
  std::mt19937_64 rng;
  std::uint64_t published = 0;

  // Publishes one slot, waiting (bounded) while the ring is full. False once sluiced stopped
  // reading (the ring stays full) or the ring reads as corrupt.
  bool publish(const protocol::Slot& slot) {
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    for (;;) {
      const protocol::RingResult result = connection->to_daemon.push(slot.bytes, sizeof(slot.bytes));
      if (result == protocol::RingResult::ok) {
        ++published;
        if (connection->to_daemon.should_ring()) protocol::ring_doorbell(connection->doorbell_to_daemon);
        return true;
      }
      if (result != protocol::RingResult::full || Clock::now() > deadline) return false;
      protocol::ring_doorbell(connection->doorbell_to_daemon);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  protocol::Slot random_slot() {
    protocol::Slot slot;
    for (auto& b : slot.bytes) b = static_cast<std::uint8_t>(rng());
    return slot;
  }

  template <typename Msg>
  protocol::Slot as_slot(const Msg& message) {
    protocol::Slot slot{};
    std::memcpy(slot.bytes, &message, sizeof(message));
    return slot;
  }

  // A well-typed message with one forged field, cycling through the kinds of forgery.
  protocol::Slot forged(std::uint64_t i) {
    switch (i % 8) {
      case 0: {  // unknown message type
        protocol::Slot slot = random_slot();
        const std::uint16_t type = static_cast<std::uint16_t>(8 + rng() % 50);
        std::memcpy(slot.bytes, &type, 2);
        return slot;
      }
      case 1: {  // op with an unknown kind, or a device far out of range
        protocol::OpMsg op{};
        op.type = static_cast<std::uint16_t>(protocol::MsgType::op);
        op.kind = static_cast<protocol::OpKind>(i % 16 == 1 ? 200 : 0);
        op.state = static_cast<protocol::OpState>(rng() % 3);
        op.device = static_cast<std::int16_t>(i % 16 == 1 ? 0 : 30000 + static_cast<int>(rng() % 2000));
        op.seq = rng();
        op.grid[0] = static_cast<std::uint32_t>(rng());
        op.predicted_ns = rng();
        return as_slot(op);
      }
      case 2: {  // op whose seq goes backwards, zero grid, huge prediction
        protocol::OpMsg op{};
        op.type = static_cast<std::uint16_t>(protocol::MsgType::op);
        op.kind = protocol::OpKind::kernel;
        op.state = protocol::OpState::held;
        op.seq = 1'000'000 - i;
        op.predicted_ns = ~std::uint64_t{0};
        return as_slot(op);
      }
      case 3: {  // op_submitted for an operation that was never announced
        protocol::OpSubmittedMsg done{};
        done.type = static_cast<std::uint16_t>(protocol::MsgType::op_submitted);
        done.device = static_cast<std::int16_t>(rng() % 4 - 1);
        done.seq = rng();
        return as_slot(done);
      }
      case 4: {  // a name chunk that overruns the name, or a name longer than allowed
        protocol::KernelNameMsg name{};
        name.type = static_cast<std::uint16_t>(protocol::MsgType::kernel_name);
        name.offset = static_cast<std::uint16_t>(rng());
        name.total = static_cast<std::uint16_t>(rng());
        name.length = static_cast<std::uint8_t>(rng());
        name.kernel_id = rng() % 4;
        std::memset(name.text, 'A', sizeof(name.text));
        return as_slot(name);
      }
      case 5: {  // a status that claims absurd work on a device that does not exist
        protocol::StatusMsg status{};
        status.type = static_cast<std::uint16_t>(protocol::MsgType::status);
        status.device = static_cast<std::int16_t>(i % 16 == 5 ? 0 : -2 - static_cast<int>(rng() % 100));
        status.flags = static_cast<std::uint8_t>(rng());
        status.inflight_ns = ~std::uint64_t{0} - rng() % 10;
        status.held_ops = rng();
        status.retired_seq = rng();
        status.applied_decision = rng();
        status.sm_count = static_cast<std::uint32_t>(rng());
        return as_slot(status);
      }
      case 6: {  // a sample with a zero or absurd duration
        protocol::SampleMsg sample{};
        sample.type = static_cast<std::uint16_t>(protocol::MsgType::sample);
        sample.kind = static_cast<protocol::OpKind>(rng() % 6);
        sample.device = static_cast<std::int16_t>(rng() % 3 - 1);
        sample.kernel_id = rng();
        sample.work = rng();
        sample.duration_ns = i % 2 == 0 ? 0 : ~std::uint64_t{0};
        return as_slot(sample);
      }
      default: {  // a kill word with a made-up IPC handle and a misaligned offset
        protocol::KillWordMsg word{};
        word.type = static_cast<std::uint16_t>(protocol::MsgType::kill_word);
        word.device = static_cast<std::int16_t>(rng() % 3 - 1);
        word.offset = rng() | 1;
        for (auto& b : word.ipc_handle) b = static_cast<std::uint8_t>(rng());
        return as_slot(word);
      }
    }
  }
};

std::string hex(std::uintptr_t value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%lx", static_cast<unsigned long>(value));
  return text;
}

// True once sluiced closed the socket (it evicted us), within `seconds`.
bool hung_up(int fd, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 50) > 0) {
      char byte;
      if ((p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) return true;
      if (recv(fd, &byte, 1, MSG_DONTWAIT) == 0) return true;
    }
  }
  return false;
}

int run_mode(const std::string& socket, const std::string& mode, std::uint64_t seed, std::uint64_t messages) {
  Hostile h;
  h.rng.seed(seed);
  auto connection = sched::connect_to_daemon({socket}, protocol::make_hello(protocol::Role::shim));
  if (!connection) {
    std::fprintf(stderr, "sluice-hostile-client: %s\n", connection.error().message.c_str());
    return 1;
  }
  h.connection = std::move(*connection);
  const auto start = Clock::now();
  sched::Connection& c = *h.connection;
  std::string shrink_result;
  if (mode == "garbage") {
    for (std::uint64_t i = 0; i < messages && h.publish(h.random_slot()); ++i) {
    }
  } else if (mode == "forged") {
    for (std::uint64_t i = 0; i < messages && h.publish(h.forged(i)); ++i) {
    }
  } else if (mode == "head") {
    for (int i = 0; i < 10; ++i) h.publish(h.forged(static_cast<std::uint64_t>(i)));
    std::atomic_ref<std::uint64_t> head(c.view.to_daemon->head);
    head.store(head.load() + (std::uint64_t{1} << 40));  // claims more messages than the ring holds
    protocol::ring_doorbell(c.doorbell_to_daemon);
  } else if (mode == "tail") {
    std::atomic_ref<std::uint64_t> tail(c.view.to_client->tail);
    tail.store(~std::uint64_t{0} - 5);
    auto* header = reinterpret_cast<std::uint8_t*>(c.view.header);
    for (std::size_t i = 0; i < protocol::kHeaderBytes; ++i) header[i] = static_cast<std::uint8_t>(h.rng());
    auto* table = reinterpret_cast<std::uint8_t*>(c.view.predictions);
    const std::size_t table_bytes = std::size_t{c.view.layout.prediction_slots} * sizeof(protocol::PredictionSlot);
    for (std::size_t i = 0; i < table_bytes; ++i) table[i] = static_cast<std::uint8_t>(h.rng());
    // Well-formed traffic afterwards, so that sluiced answers (into the scribbled ring).
    for (std::uint64_t i = 0; i < 200; ++i) h.publish(h.forged(2));
  } else if (mode == "shrink") {
    const auto begin = reinterpret_cast<std::uintptr_t>(c.mapping.base());
    const std::string path = "/proc/self/map_files/" + hex(begin) + "-" + hex(begin + c.mapping.size());
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    shrink_result = fd < 0 ? "cannot reopen the segment" : ftruncate(fd, 0) == 0 ? "truncated" : "refused";
    if (fd >= 0) close(fd);
    if (shrink_result == "truncated") {
      // Our own accesses would fault now too: only ring the doorbell, sluiced reads the ring.
      protocol::ring_doorbell(c.doorbell_to_daemon);
    } else {
      for (std::uint64_t i = 0; i < 100; ++i) h.publish(h.forged(2));
    }
  } else {
    std::fprintf(stderr, "sluice-hostile-client: unknown mode '%s' (garbage, forged, head, tail, shrink)\n",
                 mode.c_str());
    return 2;
  }
  const bool evicted = hung_up(c.socket_fd, mode == "tail" || mode == "shrink" ? 1.0 : 10.0);
  std::printf("{\"mode\": \"%s\", \"published\": %llu, \"evicted\": %s, \"seconds\": %.3f%s%s%s}\n",
              mode.c_str(), static_cast<unsigned long long>(h.published), evicted ? "true" : "false",
              std::chrono::duration<double>(Clock::now() - start).count(), shrink_result.empty() ? "" : ", \"shrink\": \"",
              shrink_result.c_str(), shrink_result.empty() ? "" : "\"");
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: sluice-hostile-client SOCKET MODE... [--seed N] [--messages N]\n");
    return 2;
  }
  std::uint64_t seed = 1, messages = 12000;
  std::vector<std::string> modes;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--seed" || arg == "--messages") && i + 1 < argc) {
      (arg == "--seed" ? seed : messages) = std::strtoull(argv[++i], nullptr, 10);
    } else {
      modes.push_back(arg);
    }
  }
  int status = 0;
  for (const std::string& mode : modes) status = std::max(status, run_mode(argv[1], mode, seed++, messages));
  return status;
}
