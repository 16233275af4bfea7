// sluiced's /metrics endpoint (docs/operations.md, "Metrics"): a small HTTP/1.x server on a thread
// of its own, so that a slow or hostile scraper never delays scheduling. Each GET /metrics asks the
// daemon's loop for the text through the control socket, like sluicectl does.
//
// Thread rules: start() and the destructor on one thread; the scrape function runs on the
// endpoint's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "sluice/common/result.h"

namespace sluice::sched::metrics {

struct ListenAddress {
  std::string host;  // an IPv4 or IPv6 literal
  std::uint16_t port = 0;
  bool ipv6 = false;
  bool loopback = true;
};

// "PORT" (loopback: 127.0.0.1), "HOST:PORT" or "[V6]:PORT", HOST an IP literal or "localhost".
// A non-loopback address is refused unless `allow_any` (--metrics-any-address): the metrics name
// the executables and labels of GPU clients. Errors name the text.
Result<ListenAddress> parse_listen_address(std::string_view text, bool allow_any);

// The body of a scrape, or an error (answered 503).
using ScrapeFunction = std::function<Result<std::string>()>;

// The scrape function for a daemon at `socket_path`: one control request ({"cmd": "metrics"}).
ScrapeFunction scrape_over_control_socket(std::string socket_path);

class Endpoint {
 public:
  // Binds and listens (errors name the address), then serves on a thread until destroyed.
  static Result<std::unique_ptr<Endpoint>> start(const ListenAddress& address, ScrapeFunction scrape);
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  std::uint16_t port() const { return port_; }  // the bound port (the one asked for, or chosen for 0)

 private:
  Endpoint(int listen_fd, int stop_fd, std::uint16_t port, ScrapeFunction scrape);
  void serve();
  void answer(int fd);

  int listen_fd_ = -1;
  int stop_fd_ = -1;
  std::uint16_t port_ = 0;
  ScrapeFunction scrape_;
  std::thread thread_;
};

// How one request is answered: the status line's code and the body. Exposed for tests.
struct HttpAnswer {
  int code = 200;
  std::string body;
};
HttpAnswer answer_request(std::string_view request_head, const ScrapeFunction& scrape);

}  // namespace sluice::sched::metrics
