// sluiced's kill word writer over the fake driver: a child process owns the word (device memory)
// and hands its IPC handle over a pipe, as a client does in a KillWordMsg; the writer opens it and
// writes values the child then reads from its own memory.
#include "kill_writer.h"

#include <cuda.h>
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace sluice::sched {
namespace {

constexpr std::uint64_t kOffset = 16;

bool read_exact(int fd, void* out, std::size_t size) {
  auto* bytes = static_cast<char*>(out);
  std::size_t got = 0;
  while (got < size) {
    ssize_t n = read(fd, bytes + got, size - got);
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

// The client's side, in a child process: allocates the word, sends its handle, then reports each
// new value it sees in the word (until it sees `last`), polling its own memory.
[[noreturn]] void own_kill_word(int to_parent, int from_parent, std::uint32_t last) {
  void* lib = dlopen(SLUICE_FAKE_DRIVER, RTLD_NOW | RTLD_LOCAL);
  auto sym = [&](const char* name) { return lib != nullptr ? dlsym(lib, name) : nullptr; };
  auto cu_init = reinterpret_cast<decltype(&cuInit)>(sym("cuInit"));
  auto ctx_retain =
      reinterpret_cast<decltype(&cuDevicePrimaryCtxRetain)>(sym("cuDevicePrimaryCtxRetain"));
  auto ctx_set = reinterpret_cast<decltype(&cuCtxSetCurrent)>(sym("cuCtxSetCurrent"));
  auto alloc = reinterpret_cast<decltype(&cuMemAlloc_v2)>(sym("cuMemAlloc_v2"));
  auto memset32 = reinterpret_cast<decltype(&cuMemsetD32_v2)>(sym("cuMemsetD32_v2"));
  auto get_handle = reinterpret_cast<decltype(&cuIpcGetMemHandle)>(sym("cuIpcGetMemHandle"));
  auto copy = reinterpret_cast<decltype(&cuMemcpyDtoH_v2)>(sym("cuMemcpyDtoH_v2"));
  CUcontext ctx = nullptr;
  CUdeviceptr word = 0;
  CUipcMemHandle handle{};
  bool ready = cu_init != nullptr && ctx_retain != nullptr && ctx_set != nullptr &&
               alloc != nullptr && memset32 != nullptr && get_handle != nullptr &&
               copy != nullptr && cu_init(0) == CUDA_SUCCESS &&
               ctx_retain(&ctx, 0) == CUDA_SUCCESS && ctx_set(ctx) == CUDA_SUCCESS &&
               alloc(&word, 4096) == CUDA_SUCCESS && memset32(word, 0, 1024) == CUDA_SUCCESS &&
               get_handle(&handle, word) == CUDA_SUCCESS;
  if (!ready) _exit(2);
  if (write(to_parent, &handle, sizeof(handle)) != sizeof(handle)) _exit(3);
  std::uint32_t seen = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::uint32_t value = 0;
    if (copy(&value, word + kOffset, sizeof(value)) != CUDA_SUCCESS) _exit(4);
    if (value != seen) {
      seen = value;
      if (write(to_parent, &value, sizeof(value)) != sizeof(value)) _exit(5);
      if (value == last) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  char done = 0;
  (void)read_exact(from_parent, &done, 1);  // keep the memory until the parent has closed it
  _exit(seen == last ? 0 : 6);
}

TEST(KillWriter, WritesThroughTheClientsIpcHandle) {
  int up[2], down[2];
  ASSERT_EQ(pipe(up), 0);
  ASSERT_EQ(pipe(down), 0);
  constexpr std::uint32_t kLast = 0xdead;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) own_kill_word(up[1], down[0], kLast);

  protocol::KillWordMsg word{};
  word.type = static_cast<std::uint16_t>(protocol::MsgType::kill_word);
  word.device = 0;
  word.offset = kOffset;
  ASSERT_TRUE(read_exact(up[0], word.ipc_handle, sizeof(word.ipc_handle)));
  {
    KillWriter writer(SLUICE_FAKE_DRIVER);
    EXPECT_FALSE(writer.has(1, 0));
    auto added = writer.add(1, word);
    ASSERT_TRUE(added) << added.error().message;
    EXPECT_TRUE(writer.has(1, 0));
    for (std::uint32_t value : {3u, kLast}) {
      auto written = writer.write(1, 0, value);
      ASSERT_TRUE(written) << written.error().message;
      std::uint32_t seen = 0;
      ASSERT_TRUE(read_exact(up[0], &seen, sizeof(seen)));
      EXPECT_EQ(seen, value);
    }
    EXPECT_TRUE(writer.write(2, 0, 1)) << "a client without a kill word: nothing to write";
    writer.remove(1);
    EXPECT_FALSE(writer.has(1, 0));
  }
  char done = 1;
  ASSERT_EQ(write(down[1], &done, 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  for (int fd : {up[0], up[1], down[0], down[1]}) close(fd);
}

TEST(KillWriter, ADriverThatCannotBeLoadedIsAnErrorNamingIt) {
  KillWriter writer("/nonexistent/libcuda.so.1");
  protocol::KillWordMsg word{};
  auto added = writer.add(1, word);
  ASSERT_FALSE(added);
  EXPECT_NE(added.error().message.find("/nonexistent/libcuda.so.1"), std::string::npos)
      << added.error().message;
  EXPECT_FALSE(writer.add(1, word)) << "not retried";
}

}  // namespace
}  // namespace sluice::sched
