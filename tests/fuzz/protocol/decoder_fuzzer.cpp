// Fuzzes what sluiced reads from clients: ring slots (validation, then the scheduling core with
// whatever passes) and socket frames. Input: records of 1 control byte + one 128-byte slot; the
// control byte picks the sending client (RT or BE) and how far the fake clock moves.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <unistd.h>
#include <algorithm>

#include "sluice/protocol/codec.h"
#include "sluice/protocol/wire.h"
#include "sluice/scheduler/scheduler.h"

namespace {

class NullOutput final : public sluice::sched::SchedulerOutput {
 public:
  void send_decision(sluice::sched::ClientId, const sluice::protocol::DecisionMsg&) override {}
  void publish_prediction(sluice::sched::ClientId, std::uint64_t, std::uint64_t) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sluice;
  NullOutput output;
  sched::SchedulerParams params;
  params.holdoff_ns = 1'000'000;
  sched::Scheduler scheduler(params, {}, output);
  sched::ClientIdentity identity;
  sched::Assignment rt, be;
  rt.params.cls = protocol::Class::rt;
  std::uint64_t now = 1'000'000'000;
  scheduler.connect(1, identity, rt, now);
  scheduler.connect(2, identity, be, now);
  scheduler.connect(3, identity, be, now);

  constexpr std::size_t kRecord = 1 + sizeof(protocol::Slot);
  for (std::size_t offset = 0; offset + kRecord <= size; offset += kRecord) {
    std::uint8_t control = data[offset];
    protocol::Slot slot;
    std::memcpy(&slot, data + offset + 1, sizeof(slot));
    auto client = static_cast<sched::ClientId>(1 + control % 3);
    auto message = protocol::decode_client_message(slot);
    if (message) {
      scheduler.handle(client, *message, now);
    } else {
      scheduler.note_invalid(client);
    }
    (void)protocol::decode_decision(slot);
    now += static_cast<std::uint64_t>(control >> 2) * 50000;
    scheduler.flush(now);
    if (control & 2) scheduler.tick(now);
    if (control == 0xff) scheduler.disconnect(client, now);
  }
  (void)scheduler.clients(now);
  (void)scheduler.devices(now);
  (void)scheduler.queue(now, 16);

  // The same bytes as a stream of socket frames.
  protocol::FrameReader reader(4096);
  int fds[2];
  if (pipe(fds) == 0) {
    std::size_t chunk = std::min<std::size_t>(size, 16384);
    if (write(fds[1], data, chunk) == static_cast<ssize_t>(chunk)) {
      close(fds[1]);
      fds[1] = -1;
      while (reader.fill(fds[0]) == protocol::FrameReader::Fill::progress) {
        for (;;) {
          auto frame = reader.next();
          if (!frame || !frame->has_value()) break;
        }
      }
    }
    close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
  }
  return 0;
}
