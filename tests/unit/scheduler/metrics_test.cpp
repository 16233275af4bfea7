// sluiced's Prometheus text writer, the daemon's metric counters, the rendering of a scrape from
// status/ps replies, the --metrics address rules and the HTTP request handling.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "metrics.h"
#include "metrics_http.h"

namespace sluice::sched::metrics {
namespace {

using nlohmann::json;

// The lines of `text` that start with `prefix`.
std::vector<std::string> lines_starting(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
    start = end + 1;
  }
  return out;
}

TEST(MetricsText, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(escape_label_value(R"(a\b"c)" "\nd"), R"(a\\b\"c\nd)");
  EXPECT_EQ(escape_help("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");
  TextWriter out;
  out.family("sluice_x_total", "counter", "a help\nline");
  out.sample("sluice_x_total", {{"comm", "py\"th\\on\n"}, {"class", "be"}}, 3);
  EXPECT_EQ(out.text(),
            "# HELP sluice_x_total a help\\nline\n# TYPE sluice_x_total counter\n"
            "sluice_x_total{comm=\"py\\\"th\\\\on\\n\",class=\"be\"} 3\n");
}

TEST(MetricsText, FormatsValues) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(12345678901), "12345678901");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(1e-5), "1e-05");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(MetricsText, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Histogram h({0.1, 1, 0.01});  // sorted on construction
  for (double v : {0.005, 0.01, 0.05, 0.5, 1.0, 7.0}) h.observe(v);
  EXPECT_EQ(h.upper_bounds(), (std::vector<double>{0.01, 0.1, 1}));
  EXPECT_EQ(h.bucket_counts(), (std::vector<std::uint64_t>{2, 1, 2, 1}));  // le is inclusive
  TextWriter out;
  out.histogram("w_seconds", {{"class", "rt"}}, h);
  EXPECT_EQ(out.text(),
            "w_seconds_bucket{class=\"rt\",le=\"0.01\"} 2\n"
            "w_seconds_bucket{class=\"rt\",le=\"0.1\"} 3\n"
            "w_seconds_bucket{class=\"rt\",le=\"1\"} 5\n"
            "w_seconds_bucket{class=\"rt\",le=\"+Inf\"} 6\n"
            "w_seconds_sum{class=\"rt\"} 8.565\n"
            "w_seconds_count{class=\"rt\"} 6\n");
}

TEST(MetricsText, EmptyHistogramStillHasEveryBucket) {
  Histogram h(gate_wait_buckets());
  TextWriter out;
  out.histogram("h", {}, h);
  EXPECT_EQ(lines_starting(out.text(), "h_bucket{").size(), gate_wait_buckets().size() + 1);
  EXPECT_NE(out.text().find("h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"), std::string::npos) << out.text();
}

TEST(DaemonMetrics, CountsPerClassAndDeadlineMisses) {
  DaemonMetrics m;
  m.note_op(protocol::Class::be, true);
  m.note_op(protocol::Class::be, false);
  m.note_op(protocol::Class::rt, false);
  m.note_release(protocol::Class::be, true, 3'000'000, 0);
  m.note_release(protocol::Class::be, false, 0, 0);
  m.note_release(protocol::Class::rt, false, 2'000, 1);       // 2 us > 1 us deadline: a miss
  m.note_release(protocol::Class::rt, false, 500, 1);         // within
  m.note_release(protocol::Class::rt, false, 9'000'000, 0);   // no deadline: never a miss
  EXPECT_EQ(m.per_class(protocol::Class::be).submitted, 2u);
  EXPECT_EQ(m.per_class(protocol::Class::be).held, 1u);
  EXPECT_EQ(m.per_class(protocol::Class::be).released, 1u);
  EXPECT_EQ(m.per_class(protocol::Class::rt).submitted, 1u);
  EXPECT_EQ(m.gate_wait(protocol::Class::be).count(), 2u);
  EXPECT_DOUBLE_EQ(m.gate_wait(protocol::Class::be).sum(), 0.003);
  EXPECT_EQ(m.gate_wait(protocol::Class::rt).count(), 3u);
  EXPECT_EQ(m.rt_deadline_misses(), 1u);
  m.note_protocol_error("invalid_op");
  m.note_protocol_error("invalid_op");
  m.note_protocol_error(invalid_message_reason(static_cast<protocol::MsgType>(99)));
  EXPECT_EQ(m.protocol_errors().at("invalid_op"), 2u);
  EXPECT_EQ(m.protocol_errors().at("unknown_message_type"), 1u);
}

json sample_status() {
  return {{"ok", true},
          {"daemon", {{"uptime_s", 12.5}}},
          {"clients", {{"total", 3}, {"rt", 1}, {"be", 2}}},
          {"devices", json::array({{{"device", 0}, {"gate", "shut"}, {"be_inflight_us", 250.0}}})},
          {"counters", {{"kills", 4}, {"route_changes", 6}, {"gate_changes", 8}, {"messages", 100}}}};
}

json sample_ps() {
  return {{"ok", true},
          {"clients", json::array({{{"class", "rt"}, {"queued", 0}},
                                   {{"class", "be"}, {"queued", 5}},
                                   {{"class", "be"}, {"queued", 2}}})}};
}

TEST(MetricsRender, FamiliesFromStatusPsAndCounters) {
  DaemonMetrics m;
  m.note_op(protocol::Class::be, true);
  m.note_release(protocol::Class::be, true, 1'000'000, 0);
  m.note_protocol_error("bad_magic");
  std::string text = render(sample_status(), sample_ps(), m);
  for (const char* line : {"sluice_clients{class=\"rt\"} 1", "sluice_clients{class=\"be\"} 2",
                           "sluice_queue_depth{class=\"be\"} 7", "sluice_queue_depth{class=\"rt\"} 0",
                           "sluice_launches_submitted_total{class=\"be\"} 1",
                           "sluice_launches_released_total{class=\"be\"} 1",
                           "sluice_gate_wait_seconds_count{class=\"be\"} 1",
                           "sluice_gate_wait_seconds_bucket{class=\"be\",le=\"0.001\"} 1",
                           "sluice_gate_wait_seconds_bucket{class=\"be\",le=\"0.0005\"} 0", "sluice_kills_total 4",
                           "sluice_route_switches_total 6", "sluice_protocol_errors_total{reason=\"bad_magic\"} 1",
                           "sluice_unmanaged_launches_total 0", "sluice_gate_shut{device=\"0\"} 1",
                           "sluice_be_inflight_seconds{device=\"0\"} 0.00025", "sluice_uptime_seconds 12.5"}) {
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
  }
  // Every family has HELP and TYPE, and every counter's name ends in _total.
  for (const std::string& type : lines_starting(text, "# TYPE ")) {
    std::string name = type.substr(7, type.find(' ', 7) - 7);
    EXPECT_EQ(lines_starting(text, "# HELP " + name + " ").size(), 1u) << name;
    if (type.ends_with(" counter")) {
      EXPECT_TRUE(name.ends_with("_total")) << name;
    }
  }
}

TEST(MetricsRender, UnmanagedLaunchesFromTheStatusWhenPresent) {
  json status = sample_status();
  status["unmanaged"] = {
      {"launches_total", 42},
      {"processes", json::array({{{"pid", 77}, {"comm", "my \"job\""}, {"launches", 40}, {"copies", 3}},
                                 {{"pid", 78}, {"comm", "b"}, {"launches", 2}, {"copies", 0}}})}};
  std::string text = render(status, sample_ps(), DaemonMetrics());
  EXPECT_NE(text.find("\nsluice_unmanaged_launches_total 42\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nsluice_unmanaged_process_launches_total{pid=\"77\",comm=\"my \\\"job\\\"\"} 40\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\nsluice_unmanaged_process_launches_total{pid=\"78\",comm=\"b\"} 2\n"), std::string::npos);
}

TEST(MetricsAddress, PortAloneIsLoopback) {
  auto a = parse_listen_address("9400", false);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9400);
  EXPECT_TRUE(a->loopback);
  auto b = parse_listen_address("localhost:1", false);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->host, "127.0.0.1");
  auto c = parse_listen_address("[::1]:9400", false);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->ipv6 && c->loopback);
  EXPECT_TRUE(parse_listen_address("127.0.0.2:80", false));
}

TEST(MetricsAddress, NonLoopbackNeedsTheExplicitFlag) {
  for (const char* text : {"0.0.0.0:9400", "10.1.2.3:9400", "[::]:9400"}) {
    auto refused = parse_listen_address(text, false);
    ASSERT_FALSE(refused) << text;
    EXPECT_NE(refused.error().message.find("--metrics-any-address"), std::string::npos) << refused.error().message;
    EXPECT_NE(refused.error().message.find(text), std::string::npos) << refused.error().message;
    auto allowed = parse_listen_address(text, true);
    ASSERT_TRUE(allowed) << text;
    EXPECT_FALSE(allowed->loopback);
  }
}

TEST(MetricsAddress, BadTextIsNamed) {
  for (const char* text : {"", "abc", "99999", "127.0.0.1:", "host.example:80", "::1:80", "[::1]80", "1.2.3:5"}) {
    auto bad = parse_listen_address(text, true);
    ASSERT_FALSE(bad) << "'" << text << "' was accepted";
    EXPECT_NE(bad.error().message.find(std::string("'") + text + "'"), std::string::npos) << bad.error().message;
  }
}

TEST(MetricsHttp, AnswersOnlyGetMetrics) {
  int scrapes = 0;
  ScrapeFunction scrape = [&]() -> Result<std::string> {
    ++scrapes;
    return std::string("sluice_up 1\n");
  };
  EXPECT_EQ(answer_request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", scrape).body, "sluice_up 1\n");
  EXPECT_EQ(answer_request("GET /metrics?x=1 HTTP/1.0\r\n\r\n", scrape).code, 200);
  EXPECT_EQ(answer_request("GET / HTTP/1.1\r\n\r\n", scrape).code, 404);
  EXPECT_EQ(answer_request("GET /metricsx HTTP/1.1\r\n\r\n", scrape).code, 404);
  EXPECT_EQ(answer_request("POST /metrics HTTP/1.1\r\n\r\n", scrape).code, 405);
  EXPECT_EQ(answer_request("hello\r\n\r\n", scrape).code, 400);
  EXPECT_EQ(answer_request("GET /metrics SPDY/3\r\n\r\n", scrape).code, 400);
  EXPECT_EQ(scrapes, 2);
  ScrapeFunction down = []() -> Result<std::string> { return make_error("connection refused"); };
  HttpAnswer unavailable = answer_request("GET /metrics HTTP/1.1\r\n\r\n", down);
  EXPECT_EQ(unavailable.code, 503);
  EXPECT_NE(unavailable.body.find("connection refused"), std::string::npos);
}

// A TCP socket connected to 127.0.0.1:port, or -1.
int connect_loopback(std::uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
  close(fd);
  return -1;
}

// One request over a real socket; the whole reply as text.
std::string http_get(std::uint16_t port, const std::string& request) {
  int fd = connect_loopback(port);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) reply.append(buffer, static_cast<std::size_t>(n));
  close(fd);
  return reply;
}

TEST(MetricsHttp, EndpointServesOverTcpAndStopsWhenDestroyed) {
  auto address = parse_listen_address("0", false);
  ASSERT_TRUE(address);
  auto endpoint = Endpoint::start(*address, []() -> Result<std::string> { return std::string("sluice_up 1\n"); });
  ASSERT_TRUE(endpoint) << endpoint.error().message;
  std::uint16_t port = (*endpoint)->port();
  ASSERT_NE(port, 0);
  std::string ok = http_get(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(ok,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 12\r\n"
            "Connection: close\r\n\r\nsluice_up 1\n");
  EXPECT_EQ(http_get(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").find("sluice_up"), std::string::npos);
  EXPECT_EQ(http_get(port, "GET /x HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u);
  endpoint->reset();  // joins the thread; the port is closed
  EXPECT_EQ(connect_loopback(port), -1);
}

TEST(MetricsHttp, BindFailureNamesTheAddress) {
  auto first = Endpoint::start(*parse_listen_address("0", false), []() -> Result<std::string> { return std::string(); });
  ASSERT_TRUE(first);
  std::string taken = fmt::format("127.0.0.1:{}", (*first)->port());
  auto second = Endpoint::start(*parse_listen_address(taken, false), []() -> Result<std::string> { return std::string(); });
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message.find("--metrics " + taken), std::string::npos) << second.error().message;
}

}  // namespace
}  // namespace sluice::sched::metrics
