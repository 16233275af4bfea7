// The device model: tickets served in submission order among ready operations that overlap,
// green-context partitions, copy and compute engines, kernel durations, deferred device errors.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "support.h"

namespace sluice::fake::testing {
namespace {

std::uint64_t wall_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

std::vector<sluice_fake_trace_record> kernels_of(const std::vector<sluice_fake_trace_record>& records, std::uint64_t stream) {
  std::vector<sluice_fake_trace_record> out;
  for (const auto& record : records) {
    if (record.kind == SLUICE_FAKE_OP_KERNEL && record.stream == stream) out.push_back(record);
  }
  return out;
}

bool masks_disjoint(const sluice_fake_trace_record& a, const sluice_fake_trace_record& b) {
  for (int i = 0; i < 4; ++i) {
    if ((a.sm_mask[i] & b.sm_mask[i]) != 0) return false;
  }
  return true;
}

class DeviceModelTest : public FakeDriverTest {
 protected:
  // cuDevicePrimaryCtxReset after a sticky fault, then the fixture's module again.
  void reset_context() {
    ASSERT_CU_OK(cuDevicePrimaryCtxReset_v2(0));  // the fixture still holds its retain
    ASSERT_CU_OK(cuModuleLoadData(&module_, kTestModule));
  }
};

TEST_F(DeviceModelTest, AGridLaunchedAfterADeepQueueWaitsForAllOfIt) {
  CUstream best_effort = nullptr;
  CUstream real_time = nullptr;
  ASSERT_CU_OK(cuStreamCreateWithPriority(&best_effort, CU_STREAM_NON_BLOCKING, 0));
  ASSERT_CU_OK(cuStreamCreateWithPriority(&real_time, CU_STREAM_NON_BLOCKING, -5));
  constexpr int kQueued = 20;
  for (int i = 0; i < kQueued; ++i) ASSERT_CU_OK(spin(best_effort, 200'000, static_cast<std::uint32_t>(i), 132));
  ASSERT_CU_OK(spin(real_time, 1'000, 999));
  ASSERT_CU_OK(cuCtxSynchronize());

  const auto records = trace();
  const auto queue = kernels_of(records, reinterpret_cast<std::uint64_t>(best_effort));
  const auto rt = kernels_of(records, reinterpret_cast<std::uint64_t>(real_time));
  ASSERT_EQ(static_cast<std::size_t>(kQueued), queue.size());
  ASSERT_EQ(1u, rt.size());
  EXPECT_EQ(999u, rt[0].tag);
  for (const auto& be : queue) {
    EXPECT_LT(be.ticket, rt[0].ticket);
    EXPECT_GE(rt[0].start_ns, be.end_ns) << "the RT grid overtook best-effort grid " << be.tag;
    EXPECT_EQ(132u, be.sm_count);
  }
  // It waited for the whole queue: at least 20 x 200 us after it was submitted, minus what had
  // already run by then.
  EXPECT_GE(rt[0].start_ns - queue.front().start_ns, kQueued * 200'000ull);
  for (CUstream s : {best_effort, real_time}) ASSERT_CU_OK(cuStreamDestroy_v2(s));
}

TEST_F(DeviceModelTest, AnOperationNotAtTheHeadOfItsStreamHoldsNothingUp) {
  // Stream A: a memory wait that only the host releases, then a kernel with an early ticket.
  // Stream B: a kernel with a later ticket. B's kernel must run while A's waits.
  std::uint32_t* flag = nullptr;
  ASSERT_CU_OK(cuMemAllocHost_v2(reinterpret_cast<void**>(&flag), 4));
  *flag = 0;
  CUstream a = nullptr;
  CUstream b = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING));
  ASSERT_CU_OK(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
  CUevent waited = nullptr;
  ASSERT_CU_OK(cuEventCreate(&waited, CU_EVENT_DEFAULT));
  ASSERT_CU_OK(cuStreamWaitValue32(b, reinterpret_cast<CUdeviceptr>(flag), 1, CU_STREAM_WAIT_VALUE_EQ));
  ASSERT_CU_OK(cuEventRecord(waited, b));
  ASSERT_CU_OK(cuStreamWaitEvent(a, waited, 0));
  ASSERT_CU_OK(spin(a, 1'000, 1));  // early ticket, but behind the event wait
  ASSERT_CU_OK(spin(b, 1'000, 2));  // later ticket, behind the memory wait
  CUstream c = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&c, CU_STREAM_NON_BLOCKING));
  ASSERT_CU_OK(spin(c, 1'000, 3));
  ASSERT_CU_OK(cuStreamSynchronize(c));  // c's grid ran although a and b hold earlier tickets
  EXPECT_CU(CUDA_ERROR_NOT_READY, cuStreamQuery(a));
  __atomic_store_n(flag, 1u, __ATOMIC_SEQ_CST);
  ASSERT_CU_OK(cuCtxSynchronize());
  for (CUstream s : {a, b, c}) ASSERT_CU_OK(cuStreamDestroy_v2(s));
  ASSERT_CU_OK(cuEventDestroy_v2(waited));
  ASSERT_CU_OK(cuMemFreeHost(flag));
}

struct GreenPartition {
  CUgreenCtx green = nullptr;
  CUstream stream = nullptr;
};

// A green context and a stream of it on the SM resource `part`.
void make_partition(CUdevResource& part, GreenPartition& out) {
  CUdevResourceDesc desc = nullptr;
  ASSERT_CU_OK(cuDevResourceGenerateDesc(&desc, &part, 1));
  ASSERT_CU_OK(cuGreenCtxCreate(&out.green, desc, 0, CU_GREEN_CTX_DEFAULT_STREAM));
  ASSERT_CU_OK(cuGreenCtxStreamCreate(&out.stream, out.green, CU_STREAM_NON_BLOCKING, 0));
}

TEST_F(DeviceModelTest, GridsOfDisjointGreenPartitionsRunTogether) {
  CUdevResource device{};
  ASSERT_CU_OK(cuDeviceGetDevResource(0, &device, CU_DEV_RESOURCE_TYPE_SM));
  EXPECT_EQ(132u, device.sm.smCount);
  unsigned groups = 0;
  ASSERT_CU_OK(cuDevSmResourceSplitByCount(nullptr, &groups, &device, nullptr, 0, 60));
  EXPECT_EQ(2u, groups);  // 60 rounds up to 64: two groups of 64, 4 SMs left
  CUdevResource parts[2] = {};
  CUdevResource rest{};
  groups = 2;
  ASSERT_CU_OK(cuDevSmResourceSplitByCount(parts, &groups, &device, &rest, 0, 60));
  ASSERT_EQ(2u, groups);
  EXPECT_EQ(64u, parts[0].sm.smCount);
  EXPECT_EQ(64u, parts[1].sm.smCount);
  EXPECT_EQ(4u, rest.sm.smCount);

  GreenPartition partitions[2];
  for (int i = 0; i < 2; ++i) {
    make_partition(parts[i], partitions[i]);
    CUgreenCtx owner = nullptr;
    ASSERT_CU_OK(cuStreamGetGreenCtx(partitions[i].stream, &owner));
    EXPECT_EQ(partitions[i].green, owner);
    CUdevResource got{};
    ASSERT_CU_OK(cuGreenCtxGetDevResource(partitions[i].green, &got, CU_DEV_RESOURCE_TYPE_SM));
    EXPECT_EQ(64u, got.sm.smCount);
  }
  // A function of the primary context launches on green streams. 128 blocks on 64 SMs: 2 waves.
  for (auto& partition : partitions) ASSERT_CU_OK(spin(partition.stream, 1'000'000, 1, 128));
  ASSERT_CU_OK(spin(nullptr, 10'000, 2));  // the whole device: after both
  for (auto& partition : partitions) ASSERT_CU_OK(cuStreamSynchronize(partition.stream));
  ASSERT_CU_OK(cuCtxSynchronize());

  const auto records = trace();
  auto first = kernels_of(records, reinterpret_cast<std::uint64_t>(partitions[0].stream));
  auto second = kernels_of(records, reinterpret_cast<std::uint64_t>(partitions[1].stream));
  auto whole = kernels_of(records, reinterpret_cast<std::uint64_t>(CU_STREAM_LEGACY));
  ASSERT_EQ(1u, first.size());
  ASSERT_EQ(1u, second.size());
  ASSERT_EQ(1u, whole.size());
  EXPECT_EQ(64u, first[0].sm_count);
  EXPECT_TRUE(masks_disjoint(first[0], second[0]));
  EXPECT_EQ(2'000'000u, first[0].end_ns - first[0].start_ns);  // two waves of 1 ms
  EXPECT_LT(first[0].start_ns, second[0].end_ns);  // the two intervals overlap
  EXPECT_LT(second[0].start_ns, first[0].end_ns);
  EXPECT_GE(whole[0].start_ns, std::max(first[0].end_ns, second[0].end_ns));
  EXPECT_EQ(132u, whole[0].sm_count);

  for (auto& partition : partitions) {
    ASSERT_CU_OK(cuStreamDestroy_v2(partition.stream));
    ASSERT_CU_OK(cuGreenCtxDestroy(partition.green));
  }
}

TEST_F(DeviceModelTest, ResourcesOfDifferentSplitsDoNotMakeOneDescriptor) {
  CUdevResource device{};
  ASSERT_CU_OK(cuDeviceGetDevResource(0, &device, CU_DEV_RESOURCE_TYPE_SM));
  CUdevResource a[1] = {};
  CUdevResource b[1] = {};
  unsigned one = 1;
  ASSERT_CU_OK(cuDevSmResourceSplitByCount(a, &one, &device, nullptr, 0, 8));
  one = 1;
  ASSERT_CU_OK(cuDevSmResourceSplitByCount(b, &one, &device, nullptr, 0, 8));
  CUdevResource both[2] = {a[0], b[0]};
  CUdevResourceDesc desc = nullptr;
  EXPECT_CU(CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION, cuDevResourceGenerateDesc(&desc, both, 2));
  unsigned fine = 0;
  ASSERT_CU_OK(cuDevSmResourceSplitByCount(nullptr, &fine, &device, nullptr, CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING, 3));
  EXPECT_EQ(33u, fine);  // groups of 4 (3 rounded up to a multiple of 2)
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuDevSmResourceSplitByCount(nullptr, &fine, &device, nullptr, 0, 200));
}

TEST_F(DeviceModelTest, CopiesUseTheCopyEngineBesideKernels) {
  CUstream compute = nullptr;
  CUstream copies = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&compute, CU_STREAM_NON_BLOCKING));
  ASSERT_CU_OK(cuStreamCreate(&copies, CU_STREAM_NON_BLOCKING));
  constexpr std::size_t kBytes = 1 << 20;
  CUdeviceptr a = zeroed_buffer(kBytes);
  CUdeviceptr b = zeroed_buffer(kBytes);
  ASSERT_CU_OK(spin(compute, 2'000'000, 1));
  ASSERT_CU_OK(cuMemcpyDtoDAsync_v2(b, a, kBytes, copies));
  ASSERT_CU_OK(cuMemcpyDtoDAsync_v2(a, b, kBytes, copies));
  ASSERT_CU_OK(cuCtxSynchronize());
  std::vector<sluice_fake_trace_record> copy_records;
  sluice_fake_trace_record kernel{};
  for (const auto& record : trace()) {
    if (record.kind == SLUICE_FAKE_OP_COPY) copy_records.push_back(record);
    if (record.kind == SLUICE_FAKE_OP_KERNEL) kernel = record;
  }
  ASSERT_EQ(2u, copy_records.size());
  const std::uint64_t expected = kBytes / 25;  // SLUICE_FAKE_COPY_GBPS = 25 bytes per ns
  for (const auto& copy : copy_records) {
    EXPECT_EQ(static_cast<std::uint32_t>(SLUICE_FAKE_ENGINE_COPY), copy.engine);
    EXPECT_EQ(expected, copy.end_ns - copy.start_ns);
    EXPECT_STREQ("memcpy DtoD", copy.name);
  }
  EXPECT_LT(copy_records[0].end_ns, kernel.end_ns);  // ran while the kernel occupied the compute engine
  EXPECT_GE(copy_records[1].start_ns, copy_records[0].end_ns);  // one copy engine: in turn
  for (CUstream s : {compute, copies}) ASSERT_CU_OK(cuStreamDestroy_v2(s));
}

TEST_F(DeviceModelTest, KernelsLastTheirModelledDuration) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  constexpr int kKernels = 50;
  const std::uint64_t before = wall_ns();
  for (int i = 0; i < kKernels; ++i) ASSERT_CU_OK(spin(stream, 20'000, static_cast<std::uint32_t>(i)));
  ASSERT_CU_OK(cuStreamSynchronize(stream));
  const std::uint64_t elapsed = wall_ns() - before;
  EXPECT_GE(elapsed, kKernels * 20'000ull);
  EXPECT_LT(elapsed, kKernels * 20'000ull * 20);  // generous: CI machines are shared
  auto records = kernels_of(trace(), reinterpret_cast<std::uint64_t>(stream));
  ASSERT_EQ(static_cast<std::size_t>(kKernels), records.size());
  for (int i = 1; i < kKernels; ++i) {
    EXPECT_EQ(20'000u, records[i].end_ns - records[i].start_ns);
    EXPECT_GE(records[i].start_ns, records[i - 1].end_ns);
    EXPECT_GE(wall_ns(), records[i].end_ns);  // the modelled end is never in the future
  }
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

TEST_F(DeviceModelTest, AFailedKernelReportsItsErrorAtTheNextSynchronization) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr log = zeroed_buffer(64);
  ASSERT_EQ(0, sluice_fake_fail_kernel("append", CUDA_ERROR_LAUNCH_FAILED, 0, 1));
  ASSERT_CU_OK(append(stream, log, 1));  // the launch itself succeeds
  ASSERT_CU_OK(append(stream, log, 2));
  EXPECT_CU(CUDA_ERROR_LAUNCH_FAILED, cuStreamSynchronize(stream));
  EXPECT_CU_OK(cuStreamSynchronize(stream));  // reported once
  EXPECT_EQ((std::vector<std::uint32_t>{2}), read_log(log));  // the failed grid did nothing
  sluice_fake_counters counters{};
  sluice_fake_counters_get(&counters, sizeof(counters));
  EXPECT_EQ(1u, counters.launches_failed);
  EXPECT_EQ(counters.launches_submitted, counters.launches_executed + counters.launches_failed);
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

TEST_F(DeviceModelTest, AStickyFaultPoisonsTheContextUntilItIsReset) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr log = zeroed_buffer(64);
  CUevent done = nullptr;
  ASSERT_CU_OK(cuEventCreate(&done, CU_EVENT_DEFAULT));
  std::uint32_t* gate = nullptr;
  ASSERT_CU_OK(cuMemAllocHost_v2(reinterpret_cast<void**>(&gate), 4));
  *gate = 0;
  ASSERT_EQ(0, sluice_fake_fail_kernel("append", CUDA_ERROR_ILLEGAL_ADDRESS, 1, 1));
  ASSERT_CU_OK(cuStreamWaitValue32(stream, reinterpret_cast<CUdeviceptr>(gate), 1, CU_STREAM_WAIT_VALUE_EQ));
  ASSERT_CU_OK(append(stream, log, 1));
  ASSERT_CU_OK(cuEventRecord(done, stream));
  __atomic_store_n(gate, 1u, __ATOMIC_SEQ_CST);  // only now may the grid fault
  EXPECT_CU(CUDA_ERROR_ILLEGAL_ADDRESS, cuEventSynchronize(done));
  EXPECT_CU(CUDA_ERROR_ILLEGAL_ADDRESS, cuStreamSynchronize(stream));
  EXPECT_CU(CUDA_ERROR_ILLEGAL_ADDRESS, append(stream, log, 2));
  CUdeviceptr more = 0;
  EXPECT_CU(CUDA_ERROR_ILLEGAL_ADDRESS, cuMemAlloc_v2(&more, 16));
  EXPECT_CU(CUDA_ERROR_ILLEGAL_ADDRESS, cuCtxSynchronize());
  reset_context();
  ASSERT_CU_OK(cuMemAlloc_v2(&more, 16));
  ASSERT_CU_OK(cuCtxSynchronize());
}

TEST_F(DeviceModelTest, TouchingFreedMemoryIsADeviceFault) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr buffer = zeroed_buffer(4096);
  ASSERT_CU_OK(cuMemFree_v2(buffer));
  std::uint32_t value = 1;
  std::uint32_t count = 4;
  ASSERT_CU_OK(launch("fill", stream, {&buffer, &value, &count}));  // launch-time: fine
  EXPECT_CU(CUDA_ERROR_ILLEGAL_ADDRESS, cuStreamSynchronize(stream));
  sluice_fake_counters counters{};
  sluice_fake_counters_get(&counters, sizeof(counters));
  EXPECT_EQ(1u, counters.launches_failed);
  reset_context();
}

TEST_F(DeviceModelTest, LaunchesCheckTheirConfigurationAndCopyTheirParameters) {
  CUfunction fill = function("fill");
  CUdeviceptr buffer = zeroed_buffer(64);
  std::uint32_t value = 7;
  std::uint32_t count = 4;
  void* params[] = {&buffer, &value, &count};
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuLaunchKernel(fill, 0, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuLaunchKernel(fill, 1, 1, 1, 1025, 1, 1, 0, nullptr, params, nullptr));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuLaunchKernel(fill, 1, 1, 1, 1, 1, 1, 64 * 1024, nullptr, params, nullptr));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuLaunchKernel(fill, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, cuLaunchKernel(reinterpret_cast<CUfunction>(&value), 1, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr));
  EXPECT_CU(CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE,
            cuLaunchCooperativeKernel(fill, 132 * 3, 1, 1, 1024, 1, 1, 0, nullptr, params));

  // The `extra` buffer, laid out as cuFuncGetParamInfo says, and overwritten right after the call.
  std::size_t offset = 0;
  std::size_t size = 0;
  ASSERT_CU_OK(cuFuncGetParamInfo(fill, 2, &offset, &size));
  EXPECT_EQ(12u, offset);
  EXPECT_EQ(4u, size);
  unsigned char packed[16] = {};
  std::memcpy(packed, &buffer, 8);
  std::memcpy(packed + 8, &value, 4);
  std::memcpy(packed + 12, &count, 4);
  std::size_t packed_size = sizeof(packed);
  void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &packed_size, CU_LAUNCH_PARAM_END};
  ASSERT_CU_OK(cuLaunchKernel(fill, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, extra));
  std::memset(packed, 0, sizeof(packed));
  ASSERT_CU_OK(cuCtxSynchronize());
  std::uint32_t host[4] = {};
  ASSERT_CU_OK(cuMemcpyDtoH_v2(host, buffer, sizeof(host)));
  EXPECT_EQ(7u, host[3]);

  // cuLaunchKernelEx with a cluster shape and a completion event; a CUkernel as the function.
  CUlibrary library = nullptr;
  ASSERT_CU_OK(cuLibraryLoadData(&library, kTestModule, nullptr, nullptr, 0, nullptr, nullptr, 0));
  CUkernel kernel = nullptr;
  ASSERT_CU_OK(cuLibraryGetKernel(&kernel, library, "fill"));
  CUevent completed = nullptr;
  ASSERT_CU_OK(cuEventCreate(&completed, CU_EVENT_DEFAULT));
  CUlaunchAttribute attributes[2] = {};
  attributes[0].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  attributes[0].value.clusterDim.x = 2;
  attributes[0].value.clusterDim.y = 1;
  attributes[0].value.clusterDim.z = 1;
  attributes[1].id = CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT;
  attributes[1].value.launchCompletionEvent.event = completed;
  CUlaunchConfig config{};
  config.gridDimX = 4;
  config.gridDimY = 1;
  config.gridDimZ = 1;
  config.blockDimX = 32;
  config.blockDimY = 1;
  config.blockDimZ = 1;
  config.attrs = attributes;
  config.numAttrs = 2;
  value = 11;
  ASSERT_CU_OK(cuLaunchKernelEx(&config, reinterpret_cast<CUfunction>(kernel), params, nullptr));
  ASSERT_CU_OK(cuEventSynchronize(completed));
  ASSERT_CU_OK(cuMemcpyDtoH_v2(host, buffer, sizeof(host)));
  EXPECT_EQ(11u, host[0]);
  config.gridDimX = 3;  // not a multiple of the cluster
  EXPECT_CU(CUDA_ERROR_INVALID_CLUSTER_SIZE, cuLaunchKernelEx(&config, reinterpret_cast<CUfunction>(kernel), params, nullptr));
  ASSERT_CU_OK(cuEventDestroy_v2(completed));
  ASSERT_CU_OK(cuLibraryUnload(library));
}

TEST_F(DeviceModelTest, ASlowEffectDoesNotHoldUpOtherGrids) {
  // A host kernel whose effect blocks until the test says so, on one green partition; a grid on
  // the other partition must start and finish meanwhile.
  static std::atomic<bool> release{false};
  release = false;
  ASSERT_EQ(0, sluice_fake_register_kernel("blocking_effect", [](const sluice_fake_launch*, void*) -> int {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return CUDA_SUCCESS;
  }, nullptr, 0));
  CUmodule module = nullptr;
  ASSERT_CU_OK(cuModuleLoadData(&module, "# sluice fake module v1\nkernel blocking_effect params= op=host\n"));
  CUfunction blocking = nullptr;
  ASSERT_CU_OK(cuModuleGetFunction(&blocking, module, "blocking_effect"));
  CUdevResource device{};
  ASSERT_CU_OK(cuDeviceGetDevResource(0, &device, CU_DEV_RESOURCE_TYPE_SM));
  CUdevResource parts[2] = {};
  unsigned groups = 2;
  ASSERT_CU_OK(cuDevSmResourceSplitByCount(parts, &groups, &device, nullptr, 0, 64));
  GreenPartition partitions[2];
  for (int i = 0; i < 2; ++i) make_partition(parts[i], partitions[i]);
  ASSERT_CU_OK(cuLaunchKernel(blocking, 1, 1, 1, 1, 1, 1, 0, partitions[0].stream, nullptr, nullptr));
  ASSERT_CU_OK(spin(partitions[1].stream, 1'000, 1));
  CUresult other = CUDA_ERROR_NOT_READY;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (other == CUDA_ERROR_NOT_READY && std::chrono::steady_clock::now() < deadline) {
    other = cuStreamQuery(partitions[1].stream);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_CU_OK(other);  // finished while the host kernel's effect was still running
  EXPECT_CU(CUDA_ERROR_NOT_READY, cuStreamQuery(partitions[0].stream));
  release = true;
  ASSERT_CU_OK(cuStreamSynchronize(partitions[0].stream));
  for (auto& partition : partitions) {
    ASSERT_CU_OK(cuStreamDestroy_v2(partition.stream));
    ASSERT_CU_OK(cuGreenCtxDestroy(partition.green));
  }
  ASSERT_CU_OK(cuModuleUnload(module));
  sluice_fake_unregister_kernel("blocking_effect");
}

struct HostKernelState {
  std::uint32_t last_value = 0;
  unsigned sm_count = 0;
  unsigned grid_x = 0;
};

TEST_F(DeviceModelTest, HostKernelsRunWithTheLaunchParameters) {
  HostKernelState state;
  ASSERT_EQ(0, sluice_fake_register_kernel("host_kernel", [](const sluice_fake_launch* launch, void* user) -> int {
    auto* s = static_cast<HostKernelState*>(user);
    std::memcpy(&s->last_value, static_cast<const char*>(launch->params) + launch->param_offsets[1], 4);
    s->sm_count = launch->sm_count;
    s->grid_x = launch->grid[0];
    return s->last_value == 13 ? CUDA_ERROR_ASSERT : CUDA_SUCCESS;
  }, &state, 50'000));
  CUmodule module = nullptr;
  ASSERT_CU_OK(cuModuleLoadData(&module, "# sluice fake module v1\nkernel host_kernel params=8,4 op=host\n"));
  CUfunction f = nullptr;
  ASSERT_CU_OK(cuModuleGetFunction(&f, module, "host_kernel"));
  std::uint64_t unused = 0;
  std::uint32_t value = 12;
  void* params[] = {&unused, &value};
  ASSERT_CU_OK(cuLaunchKernel(f, 5, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr));
  ASSERT_CU_OK(cuCtxSynchronize());
  EXPECT_EQ(12u, state.last_value);
  EXPECT_EQ(132u, state.sm_count);
  EXPECT_EQ(5u, state.grid_x);
  auto records = kernels_of(trace(), reinterpret_cast<std::uint64_t>(CU_STREAM_LEGACY));
  ASSERT_EQ(1u, records.size());
  EXPECT_EQ(50'000u, records[0].end_ns - records[0].start_ns);
  value = 13;  // the host kernel fails this one
  ASSERT_CU_OK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr));
  EXPECT_CU(CUDA_ERROR_ASSERT, cuCtxSynchronize());
  EXPECT_EQ(0, sluice_fake_unregister_kernel("host_kernel"));
  EXPECT_EQ(-1, sluice_fake_unregister_kernel("host_kernel"));
  reset_context();
}

}  // namespace
}  // namespace sluice::fake::testing
