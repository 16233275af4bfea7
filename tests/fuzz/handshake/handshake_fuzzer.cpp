// Fuzzes what a client reads from whoever answers at sluiced's socket: the welcome, the number of
// descriptors it carried, and the segment file it handed over (check_welcome, then attach_segment,
// then the rings and the prediction table over the mapped segment, as the client uses them).
// Input: sizeof(Welcome) bytes of welcome, 1 control byte (descriptor count and ring moves), and
// the segment file's bytes (whose size need not match what the welcome announces).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "connection.h"
#include "sluice/protocol/codec.h"
#include "sluice/protocol/segment.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sluice;
  if (size < sizeof(protocol::Welcome) + 1) return 0;
  protocol::Welcome welcome;
  std::memcpy(&welcome, data, sizeof(welcome));
  const std::uint8_t control = data[sizeof(welcome)];
  const std::uint8_t* file = data + sizeof(welcome) + 1;
  const std::size_t file_bytes = size - sizeof(welcome) - 1;
  const std::size_t fds = control % 8 == 0 ? 2 : protocol::kWelcomeFds;
  if (!sched::check_welcome(welcome, fds)) return 0;

  const int memfd = memfd_create("sluice-fuzz-segment", MFD_CLOEXEC);
  if (memfd < 0) return 0;
  if (file_bytes > 0 && write(memfd, file, file_bytes) != static_cast<ssize_t>(file_bytes)) {
    close(memfd);
    return 0;
  }
  sched::Connection connection;
  if (!sched::attach_segment(connection, welcome, memfd)) return 0;  // memfd is closed either way

  // The client's use of an accepted segment: its announcements, a few messages each way, and
  // prediction lookups, with the indices as the file left them.
  (void)protocol::read_mps_pipe_dir(connection.mapping.base());
  protocol::StatusMsg status{};
  status.type = static_cast<std::uint16_t>(protocol::MsgType::status);
  for (int i = 0; i < (control >> 3) % 8; ++i) (void)connection.to_daemon.push(status);
  (void)connection.to_daemon.free_slots();
  protocol::Slot slot;
  for (int i = 0; i < 4 && connection.from_daemon.pop(slot) == protocol::RingResult::ok; ++i) {
    (void)protocol::decode_decision(slot);
  }
  (void)connection.from_daemon.pending();
  for (std::uint64_t key = 0; key < 4; ++key) {
    (void)protocol::lookup_prediction(connection.view.predictions, connection.view.layout.prediction_slots,
                                      key * 0x9e3779b97f4a7c15ull + control);
  }
  return 0;
}
