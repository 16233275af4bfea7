#include "connection.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "sluice/common/log.h"
#include "sluice/protocol/socket_path.h"
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
  if (auto accepted = check_welcome(welcome, fds.size()); !accepted) {
    protocol::close_fds(fds);
    return std::move(accepted).take_error().context(path);
  }
  connection->doorbell_to_daemon = fds[1];
  connection->doorbell_to_client = fds[2];
  if (auto attached = attach_segment(*connection, welcome, fds[0]); !attached) {
    return std::move(attached).take_error().context(path);
  }
  connection->epoch = welcome.daemon_epoch;
  connection->client_id = welcome.client_id;
  connection->cls = welcome.cls;
  connection->rule = std::string(welcome.reason, strnlen(welcome.reason, sizeof(welcome.reason)));
  connection->mps_pipe_dir = protocol::read_mps_pipe_dir(connection->mapping.base());
  return connection;
}

}  // namespace

Status check_welcome(const protocol::Welcome& welcome, std::size_t fds) {
  std::string reason(welcome.reason, strnlen(welcome.reason, sizeof(welcome.reason)));
  if (welcome.magic != protocol::kMagic) return make_error("not sluiced (magic {:#x})", welcome.magic);
  if (welcome.status != protocol::WelcomeStatus::ok) return make_error("sluiced refused the connection: {}", reason);
  if (fds != protocol::kWelcomeFds) {
    return make_error("welcome carried {} descriptors, expected {}", fds, protocol::kWelcomeFds);
  }
  if (welcome.segment_bytes < protocol::kHeaderBytes || welcome.segment_bytes > kMaxSegmentBytes) {
    return make_error("welcome announces a segment of {} bytes (expected {} to {})", welcome.segment_bytes,
                      protocol::kHeaderBytes, kMaxSegmentBytes);
  }
  return {};
}

Status attach_segment(Connection& connection, const protocol::Welcome& welcome, int memfd) {
  // A segment shorter than announced would fault (SIGBUS) at the first access past its end: check
  // the file's size before mapping it.
  struct stat st {};
  const bool sized = fstat(memfd, &st) == 0 && st.st_size >= 0 &&
                     static_cast<std::uint64_t>(st.st_size) >= welcome.segment_bytes;
  const auto file_bytes = static_cast<long long>(st.st_size);
  if (!sized) {
    close(memfd);
    return make_error("segment file of {} bytes, the welcome announces {}", file_bytes, welcome.segment_bytes);
  }
  auto mapping = protocol::Mapping::map(memfd, welcome.segment_bytes);
  close(memfd);
  if (!mapping) return std::move(mapping).take_error();
  auto layout = protocol::read_layout(mapping->base(), mapping->size());
  if (!layout) return std::move(layout).take_error();
  const auto* header = reinterpret_cast<const protocol::SegmentHeader*>(mapping->base());
  if (header->daemon_epoch != welcome.daemon_epoch || header->client_id != welcome.client_id) {
    return make_error("segment belongs to another connection");
  }
  connection.mapping = std::move(*mapping);
  connection.view = protocol::SegmentView::over(connection.mapping.base(), *layout);
  connection.to_daemon = protocol::RingWriter(connection.view.to_daemon, connection.view.to_daemon_slots,
                                              layout->to_daemon_slots);
  connection.from_daemon = protocol::RingReader(connection.view.to_client, connection.view.to_client_slots,
                                                layout->to_client_slots);
  return {};
}

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
    if (connection) {
      apply_mps_pipe_dir((*connection)->mps_pipe_dir);
      return connection;
    }
    failures += fmt::format("{}{}", failures.empty() ? "" : "; ", connection.error().message);
  }
  return make_error("{}", failures.empty() ? std::string("no socket path") : failures);
}

bool apply_mps_pipe_dir(const std::string& dir) {
  if (dir.empty()) return false;
  if (const char* own = std::getenv(kMpsPipeEnv); own != nullptr && own[0] != '\0') {
    if (dir != own) log::debug("{}={} is set; the daemon's MPS directory {} is not used", kMpsPipeEnv, own, dir);
    return false;
  }
  if (setenv(kMpsPipeEnv, dir.c_str(), 1) != 0) return false;
  log::info("using the MPS control daemon of sluiced: {}={}", kMpsPipeEnv, dir);
  return true;
}

Status prepare_driver_environment(const std::vector<std::string>& paths) {
  constexpr std::uint64_t kQueryTimeoutMs = 500;
  std::string failures;
  for (const std::string& path : paths) {
    auto fd = protocol::connect_unix(path);
    if (!fd) {
      failures += fmt::format("{}{}", failures.empty() ? "" : "; ", fd.error().message);
      continue;
    }
    protocol::set_io_timeout(*fd, kQueryTimeoutMs);
    const protocol::Hello hello = protocol::make_hello(protocol::Role::control);
    auto exchange = [&]() -> Result<std::string> {
      if (auto sent = protocol::send_frame(*fd, std::string_view(reinterpret_cast<const char*>(&hello), sizeof(hello)));
          !sent) {
        return std::move(sent).take_error();
      }
      if (auto sent = protocol::send_frame(*fd, R"({"cmd":"client-env"})"); !sent) return std::move(sent).take_error();
      auto reply = protocol::recv_frame(*fd, 1 << 16);
      if (!reply) return std::move(reply).take_error();
      protocol::close_fds(reply->fds);
      return std::move(reply->bytes);
    };
    auto reply = exchange();
    close(*fd);
    if (!reply) return std::move(reply).take_error().context(path);
    auto json = nlohmann::json::parse(*reply, nullptr, false);
    if (json.is_discarded() || !json.is_object()) return make_error("{}: the reply to client-env is not JSON", path);
    if (!json.value("ok", false)) return {};  // an older daemon: nothing to prepare
    if (auto it = json.find(kMpsPipeEnv); it != json.end() && it->is_string()) apply_mps_pipe_dir(it->get<std::string>());
    return {};
  }
  return make_error("{}", failures.empty() ? std::string("no socket path") : failures);
}

}  // namespace sluice::sched

extern "C" int sluice_prepare_driver_environment(void) noexcept {
  try {
    auto prepared = sluice::sched::prepare_driver_environment(sluice::protocol::client_socket_paths());
    if (!prepared) {
      sluice::log::debug("no driver environment from sluiced: {}", prepared.error().message);
      return 1;
    }
    return 0;
  } catch (...) {
    return 1;
  }
}
