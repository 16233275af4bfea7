#include "connection.h"

#include <unistd.h>

#include <cstring>

#include "sluice/protocol/wire.h"

namespace sluice::sched {

namespace {

constexpr std::uint64_t kHandshakeTimeoutMs = 2000;

Result<std::unique_ptr<Connection>> handshake(const std::string& path, const protocol::Hello& hello) {
  auto fd = protocol::connect_unix(path);
  if (!fd) return std::move(fd).take_error();
  auto connection = std::make_unique<Connection>();
  connection->socket_path = path;
  connection->socket_fd = *fd;
  protocol::set_io_timeout(*fd, kHandshakeTimeoutMs);
  if (auto sent = protocol::send_frame(*fd, std::string_view(reinterpret_cast<const char*>(&hello), sizeof(hello))); !sent) {
    return std::move(sent).take_error().context(path);
  }
  auto frame = protocol::recv_frame(*fd, 4096);
  if (!frame) return std::move(frame).take_error().context(path);
  std::vector<int>& fds = frame->fds;
  protocol::Welcome welcome{};
  if (frame->bytes.size() < sizeof(welcome)) {
    protocol::close_fds(fds);
    return make_error("{}: welcome of {} bytes, expected {}", path, frame->bytes.size(), sizeof(welcome));
  }
  std::memcpy(&welcome, frame->bytes.data(), sizeof(welcome));
  std::string reason(welcome.reason, strnlen(welcome.reason, sizeof(welcome.reason)));
  if (welcome.magic != protocol::kMagic) {
    protocol::close_fds(fds);
    return make_error("{}: not sluiced (magic {:#x})", path, welcome.magic);
  }
  if (welcome.status != protocol::WelcomeStatus::ok) {
    protocol::close_fds(fds);
    return make_error("{}: sluiced refused the connection: {}", path, reason);
  }
  if (fds.size() != protocol::kWelcomeFds) {
    protocol::close_fds(fds);
    return make_error("{}: welcome carried {} descriptors, expected {}", path, fds.size(), protocol::kWelcomeFds);
  }
  int memfd = fds[0];
  connection->doorbell_to_daemon = fds[1];
  connection->doorbell_to_client = fds[2];
  auto mapping = protocol::Mapping::map(memfd, welcome.segment_bytes);
  close(memfd);
  if (!mapping) return std::move(mapping).take_error().context(path);
  auto layout = protocol::read_layout(mapping->base(), mapping->size());
  if (!layout) return std::move(layout).take_error().context(path);
  const auto* header = reinterpret_cast<const protocol::SegmentHeader*>(mapping->base());
  if (header->daemon_epoch != welcome.daemon_epoch || header->client_id != welcome.client_id) {
    return make_error("{}: segment belongs to another connection", path);
  }
  connection->mapping = std::move(*mapping);
  connection->view = protocol::SegmentView::over(connection->mapping.base(), *layout);
  connection->to_daemon = protocol::RingWriter(connection->view.to_daemon, connection->view.to_daemon_slots,
                                               layout->to_daemon_slots);
  connection->from_daemon = protocol::RingReader(connection->view.to_client, connection->view.to_client_slots,
                                                 layout->to_client_slots);
  connection->epoch = welcome.daemon_epoch;
  connection->client_id = welcome.client_id;
  connection->cls = welcome.cls;
  connection->rule = reason;
  return connection;
}

}  // namespace

Connection::~Connection() {
  for (int fd : {socket_fd, doorbell_to_daemon, doorbell_to_client}) {
    if (fd >= 0) close(fd);
  }
}

Result<std::unique_ptr<Connection>> connect_to_daemon(const std::vector<std::string>& paths,
                                                      const protocol::Hello& hello) {
  std::string failures;
  for (const std::string& path : paths) {
    auto connection = handshake(path, hello);
    if (connection) return connection;
    failures += fmt::format("{}{}", failures.empty() ? "" : "; ", connection.error().message);
  }
  return make_error("{}", failures.empty() ? std::string("no socket path") : failures);
}

}  // namespace sluice::sched
