// libsluice.so preloaded over the fake driver, as a user runs it: every way a program reaches the
// driver (linked directly, dlopen + dlsym, cuGetProcAddress, the real libcudart), with the gate
// open and toggling, per-thread default streams, fork, the statistics file, unmanaged entry points,
// a missing driver, and the exact set of exported symbols.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

using Env = std::map<std::string, std::string>;

struct Result {
  int status = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string scratch(const std::string& name) {
  return ::testing::TempDir() + "sluice_shim_it_" + std::to_string(getpid()) + "_" + name;
}

// Runs a program with the test's environment minus sluice's and the loader's variables, plus `env`.
Result run(const std::vector<std::string>& argv, const Env& env) {
  std::vector<std::string> vars;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var = *e;
    if (var.rfind("SLUICE_", 0) == 0 || var.rfind("LD_PRELOAD=", 0) == 0) continue;
    vars.push_back(var);
  }
  for (const auto& [key, value] : env) vars.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (std::string& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = {"timeout", "-s", "KILL", "120"};
  args.insert(args.end(), argv.begin(), argv.end());
  std::vector<char*> argp;
  for (std::string& a : args) argp.push_back(a.data());
  argp.push_back(nullptr);

  const std::string out_path = scratch("stdout");
  const std::string err_path = scratch("stderr");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  pid_t pid = 0;
  Result result;
  if (posix_spawnp(&pid, "timeout", &actions, nullptr, argp.data(), envp.data()) == 0) {
    int status = 0;
    waitpid(pid, &status, 0);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  posix_spawn_file_actions_destroy(&actions);
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  std::remove(out_path.c_str());
  std::remove(err_path.c_str());
  return result;
}

// The environment of a run through the shim. Sanitized builds need their runtime loaded first.
// LeakSanitizer is off in those runs: GCC 12's runtime misreads the dynamic TLS of a dlopen'd
// library (here the fake driver, used from sluice's release thread, which is still alive at exit)
// on glibc 2.36 and crashes its own tracer. The unit tiers keep leak checking.
Env through_shim(Env env) {
  std::string preload = SLUICE_IT_SHIM;
  if (std::string(SLUICE_IT_SANITIZER_RUNTIME).size() > 0) {
    preload = std::string(SLUICE_IT_SANITIZER_RUNTIME) + ":" + preload;
    env["ASAN_OPTIONS"] = "detect_leaks=0";
  }
  env["LD_PRELOAD"] = preload;
  env["SLUICE_REAL_LIBCUDA"] = SLUICE_IT_FAKE;
  env.emplace("SLUICE_GATE", "open");  // unless the test chose one: no daemon here
  return env;
}

std::string digest_of(const Result& r) {
  const auto at = r.out.find("digest ");
  return at == std::string::npos ? "" : r.out.substr(at + 7, 8);
}

nlohmann::json stats(const std::string& path) {
  const std::string text = slurp(path);
  if (text.empty()) return nlohmann::json::object();
  return nlohmann::json::parse(text);
}

// The workload launches 120 affine and 120 append kernels on one stream, one affine on each of two
// other streams, and captures two more: 244 launches; it replays the graph twice.
constexpr int kWorkloadLaunches = 244;

class ShimIntegration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const Result baseline = run({SLUICE_IT_CLIENT, "workload"}, {});
    ASSERT_EQ(baseline.status, 0) << baseline.err;
    baseline_digest_ = new std::string(digest_of(baseline));
    ASSERT_EQ(baseline_digest_->size(), 8u);
  }
  static void TearDownTestSuite() { delete baseline_digest_; }

  // Runs `client mode` through the shim and returns the parsed statistics file.
  nlohmann::json through(const char* client, const char* mode, Env env, Result* out = nullptr) {
    const std::string stats_path = scratch(std::string(mode) + ".stats.json");
    std::remove(stats_path.c_str());
    env["SLUICE_STATS_FILE"] = stats_path;
    const Result r = run({client, mode}, through_shim(env));
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(digest_of(r), *baseline_digest_) << r.err;
    if (out != nullptr) *out = r;
    nlohmann::json s = stats(stats_path);
    std::remove(stats_path.c_str());
    return s;
  }

  static std::string* baseline_digest_;
};
std::string* ShimIntegration::baseline_digest_ = nullptr;

TEST_F(ShimIntegration, LinkedProgramGetsTheSameResultsWithTheGateOpen) {
  const auto s = through(SLUICE_IT_CLIENT, "workload", {{"SLUICE_GATE", "open"}});
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s["gate"], "open");
  EXPECT_EQ(s["launches"], kWorkloadLaunches);
  EXPECT_EQ(s["ops"]["graph"]["inline"], 2);
  EXPECT_EQ(s["held"], 0);
  EXPECT_EQ(s["module_loads"], 1);
  EXPECT_GE(s["copies"], 3);
  EXPECT_GE(s["memsets"], 2);
  EXPECT_EQ(s["unmanaged_total"], 0);
  EXPECT_EQ(s["deferred_errors"], 0);
}

TEST_F(ShimIntegration, LinkedProgramGetsTheSameResultsWhileTheGateToggles) {
  // The gate starts open and shuts after a millisecond; a run may rarely finish inside one open
  // period, so a few runs are allowed to find one that held work.
  int held = 0;
  for (int attempt = 0; attempt < 5 && held == 0; ++attempt) {
    const auto s = through(SLUICE_IT_CLIENT, "workload", {{"SLUICE_GATE", "toggle:1"}});
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s["gate"], "toggle");
    EXPECT_EQ(s["launches"], kWorkloadLaunches);
    EXPECT_EQ(s["unmanaged_total"], 0);
    EXPECT_EQ(s["forced_releases"], 0);
    held = s["held"].get<int>();
  }
  EXPECT_GT(held, 0);
}

TEST_F(ShimIntegration, LinkedProgramGetsTheSameResultsWhileTheGateTogglesAndRoutes) {
  // toggle:1:16 moves work between the full GPU and a 16-SM green context every second flip;
  // the results must not change, and some work must have gone through a partition.
  std::uint64_t routed = 0;
  for (int attempt = 0; attempt < 5 && routed == 0; ++attempt) {
    const auto s = through(SLUICE_IT_CLIENT, "workload", {{"SLUICE_GATE", "toggle:1:16"}});
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s["launches"], kWorkloadLaunches);
    EXPECT_EQ(s["unmanaged_total"], 0);
    EXPECT_EQ(s["routing"]["route_failures"], 0);
    routed = s["routing"]["routed_ops"].get<std::uint64_t>();
  }
  EXPECT_GT(routed, 0u);
}

TEST_F(ShimIntegration, PerThreadDefaultStreamProgramGetsTheSameResults) {
  const Result baseline = run({SLUICE_IT_CLIENT_PTDS, "workload"}, {});
  ASSERT_EQ(baseline.status, 0) << baseline.err;
  EXPECT_EQ(digest_of(baseline), *baseline_digest_);
  for (const char* gate : {"open", "toggle:1"}) {
    const auto s = through(SLUICE_IT_CLIENT_PTDS, "workload", {{"SLUICE_GATE", gate}});
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s["launches"], kWorkloadLaunches);
  }
}

TEST_F(ShimIntegration, DlopenAndDlsymReachTheShim) {
  const auto s = through(SLUICE_IT_CLIENT, "dlopen", {{"SLUICE_GATE", "toggle:1"}});
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s["launches"], kWorkloadLaunches);
}

TEST_F(ShimIntegration, ProcAddressAnswersAreTheShimsOwnVariants) {
  // Without the shim the same checks hold against the fake driver, which validates the table.
  const Result plain = run({SLUICE_IT_CLIENT, "procaddress"}, {});
  EXPECT_EQ(plain.status, 0) << plain.err;
  for (const char* client : {SLUICE_IT_CLIENT, SLUICE_IT_CLIENT_PTDS}) {
    const auto s = through(client, "procaddress", {{"SLUICE_GATE", "toggle:1"}});
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s["launches"], kWorkloadLaunches);
    EXPECT_GE(s["proc_queries"], 50);
    EXPECT_EQ(s["proc_unknown"], 0);
  }
}

TEST_F(ShimIntegration, ForkedChildGetsAFreshEngine) {
  const std::string stats_path = scratch("fork.%p.json");
  Env env = {{"SLUICE_GATE", "toggle:1"}, {"SLUICE_STATS_FILE", stats_path}};
  const Result r = run({SLUICE_IT_CLIENT, "fork"}, through_shim(env));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(digest_of(r), *baseline_digest_);
  // One statistics file per process: the parent ran the workload twice, the child once.
  std::vector<int> launches;
  const std::string dir = ::testing::TempDir();
  const std::string prefix = "sluice_shim_it_" + std::to_string(getpid()) + "_fork.";
  for (int attempt = 0; attempt < 1; ++attempt) {
    FILE* ls = popen(("ls " + dir + " | grep '^" + prefix + "'").c_str(), "r");
    char line[512];
    while (ls != nullptr && std::fgets(line, sizeof line, ls) != nullptr) {
      std::string name = line;
      name.erase(name.find_last_not_of("\n") + 1);
      const auto s = stats(dir + name);
      launches.push_back(s.value("launches", -1));
      std::remove((dir + name).c_str());
    }
    if (ls != nullptr) pclose(ls);
  }
  std::sort(launches.begin(), launches.end());
  EXPECT_EQ(launches, (std::vector<int>{kWorkloadLaunches, 2 * kWorkloadLaunches}));
}

TEST_F(ShimIntegration, UnmanagedEntryPointsAreCountedPerSymbol) {
  const std::string stats_path = scratch("unmanaged.json");
  const Result r =
      run({SLUICE_IT_CLIENT, "unmanaged"}, through_shim({{"SLUICE_STATS_FILE", stats_path}}));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto s = stats(stats_path);
  std::remove(stats_path.c_str());
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s["unmanaged_total"], 3);
  EXPECT_EQ(s["unmanaged"]["cuStreamAttachMemAsync"], 3);
}

// SLUICE_KILL=1: launches of a PTX kernel go out as its instrumented twin; the twin is cached under
// $XDG_CACHE_HOME/sluice/twins and the next process reads it from there; without SLUICE_KILL
// nothing changes.
TEST_F(ShimIntegration, KillTwinsAreBuiltCachedAndReusedByTheNextProcess) {
  const std::string cache = scratch("xdg-cache");
  std::filesystem::remove_all(cache);
  const std::string ptx = std::string(SLUICE_IT_PTX_DIR) + "/add_kernel.ptx";
  auto kill_run = [&](Env env) {
    const std::string stats_path = scratch("kill.json");
    std::remove(stats_path.c_str());
    env["SLUICE_STATS_FILE"] = stats_path;
    env["XDG_CACHE_HOME"] = cache;
    const Result r = run({SLUICE_IT_CLIENT, "ptx", ptx, "add_kernel"}, through_shim(env));
    EXPECT_EQ(r.status, 0) << r.err;
    auto s = stats(stats_path);
    std::remove(stats_path.c_str());
    return s;
  };
  const auto off = kill_run({});
  ASSERT_FALSE(off.empty());
  EXPECT_EQ(off["launches"], 10);
  EXPECT_EQ(off["kill"]["twin_launches"], 0);
  EXPECT_FALSE(std::filesystem::exists(cache));

  const auto first = kill_run({{"SLUICE_KILL", "1"}, {"SLUICE_KILL_MIN_US", "0"}});
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first["kill"]["twins_built"], 1);
  EXPECT_EQ(first["kill"]["twin_launches"], 10);
  EXPECT_EQ(first["kill"]["twin_failures"], 0);
  EXPECT_EQ(first["kill"]["kill_word_registered"], 1);
  EXPECT_EQ(first["uncaptured_kernels"], 0);  // the module came through a hooked load
  EXPECT_TRUE(std::filesystem::is_directory(cache + "/sluice/twins"));

  const auto second = kill_run({{"SLUICE_KILL", "1"}, {"SLUICE_KILL_MIN_US", "0"}});
  ASSERT_FALSE(second.empty());
  EXPECT_EQ(second["kill"]["twins_built"], 0);
  EXPECT_EQ(second["kill"]["twins_cached"], 1);
  EXPECT_EQ(second["kill"]["twin_launches"], 10);

  // No daemon, default threshold: the kernel counts as long from its 8th launch.
  const auto unpredicted = kill_run({{"SLUICE_KILL", "1"}});
  ASSERT_FALSE(unpredicted.empty());
  EXPECT_EQ(unpredicted["kill"]["twin_launches"], 3);
  std::filesystem::remove_all(cache);
}

TEST_F(ShimIntegration, RealCudartGoesAsFarThroughTheShimAsWithoutIt) {
  const Result plain = run({SLUICE_IT_CUDART_CLIENT}, {{"LD_LIBRARY_PATH", SLUICE_IT_FAKE_DIR}});
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_NE(plain.out.find("cudaDriverGetVersion=0 version=13000"), std::string::npos) << plain.out;
  const std::string stats_path = scratch("cudart.json");
  const Result shimmed =
      run({SLUICE_IT_CUDART_CLIENT}, through_shim({{"SLUICE_STATS_FILE", stats_path}}));
  ASSERT_EQ(shimmed.status, 0) << shimmed.err;
  EXPECT_EQ(shimmed.out, plain.out);
  const auto s = stats(stats_path);
  std::remove(stats_path.c_str());
  ASSERT_FALSE(s.empty());
  EXPECT_GE(s["proc_queries"], 100);  // libcudart asks for every entry point it uses
  EXPECT_EQ(s["proc_unknown"], 0);
  EXPECT_GE(s["export_table_queries"], 1);
}

TEST_F(ShimIntegration, MissingDriverFailsCallsAndSaysWhyOnce) {
  Env env = through_shim({});
  env["SLUICE_REAL_LIBCUDA"] = "/nonexistent/libcuda.so.1";
  const Result r = run({SLUICE_IT_CLIENT, "workload"}, env);
  EXPECT_EQ(r.status, 1) << r.err;  // its checks fail; it neither crashes nor hangs
  std::size_t mentions = 0;
  for (std::size_t at = r.err.find("/nonexistent/libcuda.so.1 cannot be loaded");
       at != std::string::npos;
       at = r.err.find("/nonexistent/libcuda.so.1 cannot be loaded", at + 1)) {
    ++mentions;
  }
  EXPECT_EQ(mentions, 1u) << r.err;
}

// Without a driver the shim answers cuGetProcAddress from its table, with the driver's results:
// its own variants, and CUDA_SUCCESS with a null pointer for too old a version.
TEST_F(ShimIntegration, MissingDriverStillAnswersCuGetProcAddressAsTheDriverWould) {
  Env env = through_shim({});
  env["SLUICE_REAL_LIBCUDA"] = "/nonexistent/libcuda.so.1";
  const Result r = run({SLUICE_IT_CLIENT, "proctable"}, env);
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST(ShimLibrary, ExportsExactlyTheDriverSymbols) {
  std::set<std::string> expected;
  {
    std::ifstream in(SLUICE_IT_SYMBOLS);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) expected.insert(line);
    }
  }
  ASSERT_GT(expected.size(), 400u);
  std::set<std::string> exported;
  FILE* nm = popen("nm -D --defined-only " SLUICE_IT_SHIM, "r");
  ASSERT_NE(nm, nullptr);
  char line[512];
  while (std::fgets(line, sizeof line, nm) != nullptr) {
    std::istringstream words(line);
    std::string address, type, name;
    words >> address >> type >> name;
    if (!name.empty()) exported.insert(name);
  }
  pclose(nm);
  EXPECT_EQ(exported, expected);
}

TEST(ShimLibrary, IsNamedLibcudaAndNeedsOnlyTheCRuntime) {
  FILE* readelf = popen("readelf -d " SLUICE_IT_SHIM, "r");
  ASSERT_NE(readelf, nullptr);
  std::string soname;
  std::set<std::string> needed;
  char line[512];
  while (std::fgets(line, sizeof line, readelf) != nullptr) {
    const std::string text = line;
    const auto open = text.find('[');
    const auto close = text.find(']');
    if (open == std::string::npos || close == std::string::npos) continue;
    const std::string value = text.substr(open + 1, close - open - 1);
    if (text.find("(SONAME)") != std::string::npos) soname = value;
    if (text.find("(NEEDED)") != std::string::npos) needed.insert(value);
  }
  pclose(readelf);
  EXPECT_EQ(soname, "libcuda.so.1");
  if (std::string(SLUICE_IT_SANITIZER_RUNTIME).empty()) {
    const std::set<std::string> allowed = {"libc.so.6",           "libm.so.6",  "libstdc++.so.6",
                                           "libgcc_s.so.1",       "libdl.so.2", "libpthread.so.0",
                                           "ld-linux-x86-64.so.2"};
    for (const std::string& lib : needed) EXPECT_TRUE(allowed.count(lib)) << lib;
  }
}

}  // namespace
