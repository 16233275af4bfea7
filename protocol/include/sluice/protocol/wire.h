// Frames over sluiced's Unix stream socket: a 32-bit little-endian length, then the bytes. The
// shim's handshake frames are the binary Hello/Welcome of layout.h (the Welcome carries the
// segment's file descriptors as SCM_RIGHTS); sluicectl's frames are JSON requests and replies.
//
// Thread rules: a socket is used by one thread at a time.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/common/result.h"
#include "sluice/protocol/layout.h"

namespace sluice::protocol {

inline constexpr std::size_t kMaxFrameBytes = std::size_t{8} << 20;
inline constexpr std::size_t kMaxFrameFds = 4;

struct Frame {
  std::string bytes;
  std::vector<int> fds;  // owned by the receiver
};

// A Hello of this build's ABI for `role`, from this process; callers fill in the rest.
inline Hello make_hello(Role role) {
  Hello hello{};
  hello.magic = kMagic;
  hello.abi_major = kAbiMajor;
  hello.abi_minor = kAbiMinor;
  hello.role = role;
  hello.pid = static_cast<std::uint32_t>(getpid());
  return hello;
}

inline void close_fds(std::vector<int>& fds) {
  for (int fd : fds) close(fd);
  fds.clear();
}

// Connects to the socket at `path` (blocking connect; a missing socket fails at once).
inline Result<int> connect_unix(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return make_error("socket path '{}' is empty or longer than {} bytes", path, sizeof(addr.sun_path) - 1);
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error("socket(): {}", std::strerror(errno));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return make_error("{}: {}", path, std::strerror(err));
  }
  return fd;
}

inline void set_io_timeout(int fd, std::uint64_t timeout_ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout_ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout_ms % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// One frame as bytes on the wire: the little-endian length, then the payload.
inline std::string encode_frame(std::string_view bytes) {
  std::string buffer(4 + bytes.size(), '\0');
  auto length = static_cast<std::uint32_t>(bytes.size());
  for (int i = 0; i < 4; ++i) buffer[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  std::memcpy(buffer.data() + 4, bytes.data(), bytes.size());
  return buffer;
}

// Sends one whole frame, blocking (SO_SNDTIMEO bounds the wait). `fds` ride on the first byte.
inline Status send_frame(int fd, std::string_view bytes, const int* fds = nullptr, std::size_t nfds = 0) {
  if (bytes.size() > kMaxFrameBytes) return make_error("frame of {} bytes is too large", bytes.size());
  if (nfds > kMaxFrameFds) return make_error("{} descriptors in one frame", nfds);
  std::string buffer = encode_frame(bytes);

  std::size_t sent = 0;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFrameFds)] = {};
  while (sent < buffer.size()) {
    iovec iov{buffer.data() + sent, buffer.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (sent == 0 && nfds > 0) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      std::memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return make_error("send timed out");
      return make_error("send: {}", std::strerror(errno));
    }
    sent += static_cast<std::size_t>(n);
  }
  return {};
}

namespace detail {

// recvmsg that keeps any descriptors that arrive (close-on-exec).
inline ssize_t recv_with_fds(int fd, void* data, std::size_t size, std::vector<int>& fds) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFrameFds)] = {};
  iovec iov{data, size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int received = -1;
      std::memcpy(&received, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      fds.push_back(received);
    }
  }
  return n;
}

}  // namespace detail

// Receives one whole frame, blocking (SO_RCVTIMEO bounds the wait).
inline Result<Frame> recv_frame(int fd, std::size_t max_bytes = kMaxFrameBytes) {
  Frame frame;
  auto read_exact = [&](char* out, std::size_t size) -> Status {
    std::size_t got = 0;
    while (got < size) {
      ssize_t n = detail::recv_with_fds(fd, out + got, size - got, frame.fds);
      if (n == 0) return make_error("connection closed");
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return make_error("receive timed out");
        return make_error("receive: {}", std::strerror(errno));
      }
      got += static_cast<std::size_t>(n);
    }
    return {};
  };
  unsigned char prefix[4];
  if (auto status = read_exact(reinterpret_cast<char*>(prefix), 4); !status) {
    close_fds(frame.fds);
    return std::move(status).take_error();
  }
  std::uint32_t length = prefix[0] | (prefix[1] << 8) | (prefix[2] << 16) | (std::uint32_t{prefix[3]} << 24);
  if (length > max_bytes) {
    close_fds(frame.fds);
    return make_error("frame of {} bytes exceeds the limit of {}", length, max_bytes);
  }
  frame.bytes.resize(length);
  if (auto status = read_exact(frame.bytes.data(), length); !status) {
    close_fds(frame.fds);
    return std::move(status).take_error();
  }
  return frame;
}

// Collects frames from a non-blocking socket as bytes arrive. Descriptors sent to the reader are
// not expected and are closed.
class FrameReader {
 public:
  enum class Fill : std::uint8_t { progress, would_block, closed, error };

  explicit FrameReader(std::size_t max_bytes = kMaxFrameBytes) : max_bytes_(max_bytes) {}

  // Reads what the socket has now.
  Fill fill(int fd) {
    char chunk[16384];
    std::vector<int> fds;
    ssize_t n = detail::recv_with_fds(fd, chunk, sizeof(chunk), fds);
    close_fds(fds);
    if (n == 0) return Fill::closed;
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return Fill::would_block;
      return Fill::error;
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return Fill::progress;
  }

  // The next complete frame, if any. An oversized length is an error that names the size.
  Result<std::optional<std::string>> next() {
    if (buffer_.size() < 4) return std::optional<std::string>();
    auto byte = [&](int i) { return std::uint32_t{static_cast<unsigned char>(buffer_[i])}; };
    std::uint32_t length = byte(0) | (byte(1) << 8) | (byte(2) << 16) | (byte(3) << 24);
    if (length > max_bytes_) return make_error("frame of {} bytes exceeds the limit of {}", length, max_bytes_);
    if (buffer_.size() < 4 + std::size_t{length}) return std::optional<std::string>();
    std::string frame = buffer_.substr(4, length);
    buffer_.erase(0, 4 + std::size_t{length});
    return std::optional<std::string>(std::move(frame));
  }

  std::size_t buffered() const noexcept { return buffer_.size(); }

 private:
  std::size_t max_bytes_;
  std::string buffer_;
};

}  // namespace sluice::protocol
