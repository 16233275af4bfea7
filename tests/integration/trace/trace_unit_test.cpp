// sluice-trace's pieces that need no BPF: the driver's symbols (read from the fake driver's ELF
// file and checked against the loaded library), the report formats, and sluiced's side (reading
// the tracer's lines, the "unmanaged" object, the tracer child's life).
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <gtest/gtest.h>
#include <thread>

#include "report.h"
#include "symbols.h"
#include "tracer.h"

namespace {

using namespace sluice;

const trace::DriverSymbol* find(const std::vector<trace::DriverSymbol>& symbols, const std::string& name) {
  for (const auto& s : symbols) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

TEST(TraceSymbols, ClassifiesLaunchAndCopyEntryPoints) {
  EXPECT_EQ(trace::classify_entry_point("cuLaunchKernel"), trace::EntryKind::launch);
  EXPECT_EQ(trace::classify_entry_point("cuLaunchKernelEx_ptsz"), trace::EntryKind::launch);
  EXPECT_EQ(trace::classify_entry_point("cuLaunchCooperativeKernel"), trace::EntryKind::launch);
  EXPECT_EQ(trace::classify_entry_point("cuGraphLaunch_ptsz"), trace::EntryKind::launch);
  EXPECT_EQ(trace::classify_entry_point("cuMemcpyHtoDAsync_v2_ptsz"), trace::EntryKind::copy);
  EXPECT_EQ(trace::classify_entry_point("cuMemcpy3DPeer"), trace::EntryKind::copy);
  EXPECT_FALSE(trace::classify_entry_point("cuLaunchHostFunc"));
  EXPECT_FALSE(trace::classify_entry_point("cuMemsetD32Async"));
  EXPECT_FALSE(trace::classify_entry_point("cuMemAlloc_v2"));
}

TEST(TraceSymbols, FakeDriverOffsetsPointAtTheLoadedFunctions) {
  auto symbols = trace::driver_entry_points(SLUICE_FAKE_DRIVER);
  ASSERT_TRUE(symbols) << symbols.error().message;
  for (const char* name : {"cuLaunchKernel", "cuLaunchKernel_ptsz", "cuLaunchKernelEx", "cuLaunchCooperativeKernel",
                           "cuGraphLaunch", "cuMemcpyHtoD_v2", "cuMemcpyHtoDAsync_v2", "cuMemcpyDtoH_v2"}) {
    EXPECT_NE(find(*symbols, name), nullptr) << name;
  }
  EXPECT_EQ(find(*symbols, "cuLaunchKernel")->kind, trace::EntryKind::launch);
  EXPECT_EQ(find(*symbols, "cuMemcpyHtoD_v2")->kind, trace::EntryKind::copy);
  EXPECT_EQ(find(*symbols, "cuMemAlloc_v2"), nullptr);

  // The bytes at each file offset are the function the dynamic linker resolves the name to.
  void* library = dlopen(SLUICE_FAKE_DRIVER, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(library, nullptr) << dlerror();
  std::ifstream file(SLUICE_FAKE_DRIVER, std::ios::binary);
  for (const auto& symbol : *symbols) {
    void* address = dlsym(library, symbol.name.c_str());
    ASSERT_NE(address, nullptr) << symbol.name;
    char on_disk[16] = {};
    file.seekg(static_cast<std::streamoff>(symbol.offset));
    file.read(on_disk, sizeof(on_disk));
    EXPECT_EQ(std::memcmp(on_disk, address, sizeof(on_disk)), 0) << symbol.name;
  }
  dlclose(library);
}

TEST(TraceSymbols, ErrorsNameTheFileAndTheCause) {
  auto missing = trace::driver_entry_points("/nonexistent/libcuda.so.1");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("/nonexistent/libcuda.so.1: cannot open"), std::string::npos);

  char text_path[] = "/tmp/sluice-trace-test-XXXXXX";
  int fd = mkstemp(text_path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "not an ELF file", 15), 15);
  close(fd);
  auto text = trace::driver_entry_points(text_path);
  unlink(text_path);
  ASSERT_FALSE(text);
  EXPECT_NE(text.error().message.find("not a 64-bit ELF file"), std::string::npos);

  // A shared library without the driver's symbols: the C library.
  Dl_info libc{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&std::printf), &libc), 0);
  auto other = trace::driver_entry_points(libc.dli_fname);
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message.find("cuLaunchKernel not found"), std::string::npos) << other.error().message;
}

TEST(TraceReport, JsonTotalsAndTable) {
  trace::Snapshot snapshot;
  snapshot.driver = "/lib/libcuda.so.1";
  snapshot.probes = 3;
  snapshot.processes = {{10, "python", 5, 1}, {20, "bench", 7, 0}};
  trace::sort_processes(snapshot.processes);
  EXPECT_EQ(snapshot.processes.front().pid, 20u);
  auto json = trace::to_json(snapshot);
  EXPECT_EQ(json["launches_total"], 12);
  EXPECT_EQ(json["copies_total"], 1);
  EXPECT_EQ(json["processes"][0]["comm"], "bench");
  std::string table = trace::to_table(snapshot);
  EXPECT_NE(table.find("LAUNCHES"), std::string::npos);
  EXPECT_NE(table.find("python"), std::string::npos);
}

TEST(TraceReport, Durations) {
  EXPECT_DOUBLE_EQ(*trace::parse_duration("--duration", "2s"), 2.0);
  EXPECT_DOUBLE_EQ(*trace::parse_duration("--duration", "500ms"), 0.5);
  EXPECT_DOUBLE_EQ(*trace::parse_duration("--duration", "1m"), 60.0);
  EXPECT_DOUBLE_EQ(*trace::parse_duration("--duration", "1.5"), 1.5);
  for (const char* bad : {"", "0s", "-1s", "2h", "abc", "2 s"}) {
    auto parsed = trace::parse_duration("--interval", bad);
    ASSERT_FALSE(parsed) << bad;
    EXPECT_NE(parsed.error().message.find("--interval"), std::string::npos);
  }
}

TEST(TraceReport, JsonLinesReadBack) {
  trace::Snapshot snapshot;
  snapshot.processes = {{77, "trainer", 12, 3}};
  auto read = trace::processes_from_json_line(trace::to_json(snapshot).dump());
  ASSERT_TRUE(read) << read.error().message;
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ((*read)[0].pid, 77u);
  EXPECT_EQ((*read)[0].comm, "trainer");
  EXPECT_EQ((*read)[0].launches, 12u);
  EXPECT_EQ((*read)[0].copies, 3u);
}

TEST(DaemonTracer, ReadsLinesAndLeavesClientsOut) {
  auto parsed = trace::processes_from_json_line(
      R"({"processes":[{"pid":5,"comm":"direct","launches":3,"copies":2},{"pid":6,"comm":"client","launches":9,"copies":0}]})");
  ASSERT_TRUE(parsed) << parsed.error().message;
  ASSERT_EQ(parsed->size(), 2u);
  auto unmanaged = sched::unmanaged_json(*parsed, {6});
  EXPECT_EQ(unmanaged["launches_total"], 3);
  ASSERT_EQ(unmanaged["processes"].size(), 1u);
  EXPECT_EQ(unmanaged["processes"][0]["pid"], 5);
  EXPECT_EQ(unmanaged["processes"][0]["comm"], "direct");
  EXPECT_EQ(unmanaged["processes"][0]["copies"], 2);

  for (const char* bad : {"[]", "{}", R"({"processes":[{"pid":-1,"launches":1,"copies":1}]})",
                          R"({"processes":[{"pid":0,"launches":1,"copies":1}]})",
                          R"({"processes":[{"pid":4,"launches":"many","copies":1}]})"}) {
    EXPECT_FALSE(trace::processes_from_json_line(bad)) << bad;
  }
  auto error = trace::processes_from_json_line(R"({"processes":[{"pid":4,"copies":1}]})");
  ASSERT_FALSE(error);
  EXPECT_EQ(error.error().message, "processes[0].launches: expected an unsigned integer");
}

// A stand-in for sluice-trace: a shell script.
std::string write_script(const std::string& body) {
  char path[] = "/tmp/sluice-trace-fake-XXXXXX";
  int fd = mkstemp(path);
  std::string text = "#!/bin/sh\n" + body + "\n";
  EXPECT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  chmod(path, 0700);
  return path;
}

// Waits (up to a bound that only a broken tracer reaches) until the tracer leaves "starting".
nlohmann::json settled_status(const sched::Tracer& tracer) {
  for (int i = 0; i < 3000; ++i) {
    auto status = tracer.status();
    if (status["state"] != "starting") return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return tracer.status();
}

TEST(DaemonTracer, ReportsTheChildsCountsWithoutClients) {
  std::string script = write_script(
      R"(echo 'sluice-trace: 2 probes on /fake'
echo '{"processes":[{"pid":41,"comm":"direct","launches":4,"copies":1},{"pid":42,"comm":"client","launches":8,"copies":2}]}'
exec sleep 60)");
  {
    sched::Tracer tracer({script, "/fake/libcuda.so.1", "1s"});
    tracer.note_client(42);
    auto status = settled_status(tracer);
    EXPECT_EQ(status["state"], "running");
    EXPECT_EQ(status["driver"], "/fake/libcuda.so.1");
    EXPECT_EQ(status["launches_total"], 4);
    ASSERT_EQ(status["processes"].size(), 1u);
    EXPECT_EQ(status["processes"][0]["pid"], 41);
  }  // the destructor stops `sleep` (the script's process)
  unlink(script.c_str());
}

TEST(DaemonTracer, AChildThatFailsIsReportedWithItsMessage) {
  std::string script = write_script("echo 'sluice-trace: not permitted: tracing needs root' >&2\nexit 3");
  sched::Tracer tracer({script, "", "1s"});
  auto status = settled_status(tracer);
  EXPECT_EQ(status["state"], "failed");
  EXPECT_NE(status["error"].get<std::string>().find("exited with status 3: sluice-trace: not permitted"),
            std::string::npos)
      << status.dump();
  EXPECT_EQ(status["launches_total"], 0);
  unlink(script.c_str());

  sched::Tracer absent({"/nonexistent/sluice-trace", "", "1s"});
  EXPECT_EQ(absent.status()["state"], "failed");
  EXPECT_NE(absent.status()["error"].get<std::string>().find("/nonexistent/sluice-trace"), std::string::npos);
}

}  // namespace
