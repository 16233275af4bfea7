#include "metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>

#include "sluice/common/log.h"
#include "sluice/protocol/wire.h"

namespace sluice::sched::metrics {

namespace {

// A scraper gets this long to send its request and read the answer.
constexpr std::uint64_t kIoTimeoutMs = 2000;
constexpr std::size_t kMaxRequestHead = 8192;

bool is_loopback(const ListenAddress& address) {
  if (address.ipv6) {
    in6_addr a{};
    inet_pton(AF_INET6, address.host.c_str(), &a);
    return IN6_IS_ADDR_LOOPBACK(&a);
  }
  in_addr a{};
  inet_pton(AF_INET, address.host.c_str(), &a);
  return (ntohl(a.s_addr) >> 24) == 127;
}

const char* reason_phrase(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    default: return "Service Unavailable";
  }
}

void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the scraper went away or stalled past the timeout
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

Result<ListenAddress> parse_listen_address(std::string_view text, bool allow_any) {
  ListenAddress address;
  std::string_view host = "127.0.0.1", port = text;
  if (!text.empty() && text.front() == '[') {
    std::size_t close = text.find("]:");
    if (close == std::string_view::npos) return make_error("--metrics '{}': expected [IPV6]:PORT", text);
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    address.ipv6 = true;
  } else if (std::size_t colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return make_error("--metrics '{}': write an IPv6 address in brackets, [::1]:PORT", text);
    }
  }
  if (host == "localhost") host = "127.0.0.1";
  address.host = std::string(host);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return make_error("--metrics '{}': the port must be a number from 0 to 65535", text);
  }
  address.port = static_cast<std::uint16_t>(value);
  unsigned char buffer[sizeof(in6_addr)];
  if (inet_pton(address.ipv6 ? AF_INET6 : AF_INET, address.host.c_str(), buffer) != 1) {
    return make_error("--metrics '{}': '{}' is not an IP{} address (or localhost)", text, address.host,
                      address.ipv6 ? "v6" : "v4");
  }
  address.loopback = is_loopback(address);
  if (!address.loopback && !allow_any) {
    return make_error("--metrics '{}': {} is not a loopback address; the metrics name GPU clients' executables and "
                      "labels, so serving them beyond this host needs --metrics-any-address",
                      text, address.host);
  }
  return address;
}

ScrapeFunction scrape_over_control_socket(std::string socket_path) {
  return [socket_path = std::move(socket_path)]() -> Result<std::string> {
    auto fd = protocol::connect_unix(socket_path);
    if (!fd) return std::move(fd).take_error();
    protocol::set_io_timeout(*fd, kIoTimeoutMs);
    protocol::Hello hello = protocol::make_hello(protocol::Role::control);
    auto sent = protocol::send_frame(*fd, std::string_view(reinterpret_cast<const char*>(&hello), sizeof(hello)));
    if (sent) sent = protocol::send_frame(*fd, R"({"cmd":"metrics"})");
    auto frame = sent ? protocol::recv_frame(*fd) : Result<protocol::Frame>(sent.error());
    close(*fd);
    if (!frame) return make_error("{}: {}", socket_path, frame.error().message);
    auto reply = nlohmann::json::parse(frame->bytes, nullptr, false);
    if (reply.is_discarded() || !reply.is_object() || !reply.value("ok", false) || !reply.contains("text") ||
        !reply["text"].is_string()) {
      return make_error("{}: no metrics in the daemon's reply", socket_path);
    }
    return reply["text"].get<std::string>();
  };
}

HttpAnswer answer_request(std::string_view head, const ScrapeFunction& scrape) {
  // Request line: METHOD SP TARGET SP HTTP/1.x
  std::string_view line = head.substr(0, head.find_first_of("\r\n"));
  std::size_t first = line.find(' ');
  std::size_t second = first == std::string_view::npos ? first : line.find(' ', first + 1);
  if (second == std::string_view::npos || line.substr(second + 1).substr(0, 7) != "HTTP/1.") {
    return {400, "expected an HTTP/1.x request line\n"};
  }
  std::string_view method = line.substr(0, first);
  std::string_view target = line.substr(first + 1, second - first - 1);
  target = target.substr(0, target.find('?'));
  if (target != "/metrics") return {404, "only /metrics is served here\n"};
  if (method != "GET" && method != "HEAD") return {405, "only GET and HEAD\n"};
  auto text = scrape();
  if (!text) return {503, fmt::format("sluiced did not answer: {}\n", text.error().message)};
  return {200, std::move(*text)};
}

Result<std::unique_ptr<Endpoint>> Endpoint::start(const ListenAddress& address, ScrapeFunction scrape) {
  int family = address.ipv6 ? AF_INET6 : AF_INET;
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return make_error("metrics socket: {}", std::strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (address.ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(address.port);
    inet_pton(AF_INET6, address.host.c_str(), &a->sin6_addr);
    length = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(address.port);
    inet_pton(AF_INET, address.host.c_str(), &a->sin_addr);
    length = sizeof(*a);
  }
  std::string where = address.ipv6 ? fmt::format("[{}]:{}", address.host, address.port)
                                   : fmt::format("{}:{}", address.host, address.port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 || listen(fd, 16) != 0) {
    int err = errno;
    close(fd);
    return make_error("--metrics {}: {}", where, std::strerror(err));
  }
  length = sizeof(storage);
  getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length);
  std::uint16_t port = ntohs(address.ipv6 ? reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
  int stop = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop < 0) {
    close(fd);
    return make_error("metrics eventfd: {}", std::strerror(errno));
  }
  auto endpoint = std::unique_ptr<Endpoint>(new Endpoint(fd, stop, port, std::move(scrape)));
  endpoint->thread_ = std::thread([self = endpoint.get()] { self->serve(); });
  return endpoint;
}

Endpoint::Endpoint(int listen_fd, int stop_fd, std::uint16_t port, ScrapeFunction scrape)
    : listen_fd_(listen_fd), stop_fd_(stop_fd), port_(port), scrape_(std::move(scrape)) {}

Endpoint::~Endpoint() {
  std::uint64_t one = 1;
  if (write(stop_fd_, &one, sizeof(one)) < 0) log::warn("metrics: cannot wake the endpoint: {}", std::strerror(errno));
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
  close(stop_fd_);
}

void Endpoint::serve() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log::error("metrics: poll: {}; the endpoint stops", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // EAGAIN: another wakeup took it; errors of one connection do not stop the rest
    answer(fd);
    close(fd);
  }
}

// One request per connection (Connection: close); scrapers are served one at a time.
void Endpoint::answer(int fd) {
  protocol::set_io_timeout(fd, kIoTimeoutMs);
  std::string head;
  char buffer[1024];
  while (head.find("\r\n\r\n") == std::string::npos && head.find("\n\n") == std::string::npos) {
    if (head.size() > kMaxRequestHead) break;
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    head.append(buffer, static_cast<std::size_t>(n));
  }
  if (head.empty()) return;
  HttpAnswer reply = answer_request(head, scrape_);
  bool head_only = head.rfind("HEAD ", 0) == 0;
  const char* type = reply.code == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8";
  std::string out = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                reply.code, reason_phrase(reply.code), type, reply.body.size());
  if (!head_only) out += reply.body;
  write_all(fd, out);
}

}  // namespace sluice::sched::metrics
