// Stream semantics: order within a stream, the legacy default stream barrier, per-thread default
// streams, non-blocking streams, events, host functions, stream memory operations.
#include <atomic>
#include <thread>

#include "support.h"

namespace sluice::fake::testing {
namespace {

// A 32-bit flag in pinned host memory that a stream can wait on (cuStreamWaitValue32) and the
// test opens from the host: the tests' way to hold a stream back.
class Gate {
 public:
  Gate() {
    EXPECT_CU_OK(cuMemAllocHost_v2(reinterpret_cast<void**>(&flag_), sizeof(*flag_)));
    __atomic_store_n(flag_, 0u, __ATOMIC_SEQ_CST);
  }
  ~Gate() { cuMemFreeHost(flag_); }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  CUresult hold(CUstream stream) {
    return cuStreamWaitValue32(stream, reinterpret_cast<CUdeviceptr>(flag_), 1, CU_STREAM_WAIT_VALUE_GEQ);
  }
  void open() { __atomic_store_n(flag_, 1u, __ATOMIC_SEQ_CST); }
  std::uint32_t* flag() { return flag_; }

 private:
  std::uint32_t* flag_ = nullptr;
};

class StreamTest : public FakeDriverTest {};

TEST_F(StreamTest, OperationsOfOneStreamRunInSubmissionOrder) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr value = zeroed_buffer(4);
  CUdeviceptr log = zeroed_buffer(4 * 65);
  std::uint32_t expected = 0;
  for (std::uint32_t i = 1; i <= 64; ++i) {
    std::uint32_t mul = i % 3 + 2;
    std::uint32_t add = i;
    std::uint32_t count = 1;
    ASSERT_CU_OK(launch("affine", stream, {&value, &mul, &add, &count}));
    ASSERT_CU_OK(append(stream, log, i));
    expected = expected * mul + add;
  }
  ASSERT_CU_OK(cuStreamSynchronize(stream));
  std::uint32_t result = 0;
  ASSERT_CU_OK(cuMemcpyDtoH_v2(&result, value, 4));
  EXPECT_EQ(expected, result);
  std::vector<std::uint32_t> order = read_log(log);
  ASSERT_EQ(64u, order.size());
  for (std::uint32_t i = 0; i < 64; ++i) EXPECT_EQ(i + 1, order[i]);
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

TEST_F(StreamTest, LegacyStreamWaitsForBlockingStreamsAndTheyWaitForIt) {
  Gate gate;
  CUstream blocking = nullptr;
  CUstream later = nullptr;
  CUstream independent = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&blocking, CU_STREAM_DEFAULT));
  ASSERT_CU_OK(cuStreamCreate(&later, CU_STREAM_DEFAULT));
  ASSERT_CU_OK(cuStreamCreate(&independent, CU_STREAM_NON_BLOCKING));
  CUdeviceptr log = zeroed_buffer(64);

  ASSERT_CU_OK(gate.hold(blocking));
  ASSERT_CU_OK(append(blocking, log, 1));
  ASSERT_CU_OK(append(nullptr, log, 2));       // legacy: after everything blocking so far
  ASSERT_CU_OK(append(later, log, 3));         // blocking: after the legacy work
  ASSERT_CU_OK(append(independent, log, 4));   // non-blocking: free to run now

  ASSERT_CU_OK(cuStreamSynchronize(independent));
  EXPECT_CU(CUDA_ERROR_NOT_READY, cuStreamQuery(CU_STREAM_LEGACY));
  EXPECT_CU(CUDA_ERROR_NOT_READY, cuStreamQuery(later));
  gate.open();
  ASSERT_CU_OK(cuStreamSynchronize(later));
  EXPECT_EQ((std::vector<std::uint32_t>{4, 1, 2, 3}), read_log(log));
  for (CUstream s : {blocking, later, independent}) ASSERT_CU_OK(cuStreamDestroy_v2(s));
}

TEST_F(StreamTest, PerThreadDefaultStreamsAreSeparateButBlocking) {
  Gate gate;
  CUdeviceptr log = zeroed_buffer(64);
  unsigned long long main_id = 0;
  unsigned long long explicit_id = 0;
  unsigned long long legacy_id = 0;
  ASSERT_CU_OK(cuStreamGetId_ptsz(nullptr, &main_id));
  ASSERT_CU_OK(cuStreamGetId(CU_STREAM_PER_THREAD, &explicit_id));
  ASSERT_CU_OK(cuStreamGetId(nullptr, &legacy_id));
  EXPECT_EQ(main_id, explicit_id);
  EXPECT_NE(main_id, legacy_id);

  // This thread's per-thread stream is held; another thread's is not.
  ASSERT_CU_OK(gate.hold(CU_STREAM_PER_THREAD));
  std::uint32_t first = 1;
  void* first_params[] = {&log, &first};
  ASSERT_CU_OK(cuLaunchKernel_ptsz(function("append"), 1, 1, 1, 1, 1, 1, 0, nullptr, first_params, nullptr));
  unsigned long long other_id = 0;
  std::thread other([&] {
    ASSERT_CU_OK(cuCtxSetCurrent(ctx_));
    ASSERT_CU_OK(cuStreamGetId_ptsz(nullptr, &other_id));
    std::uint32_t tag = 2;
    void* params[] = {&log, &tag};
    ASSERT_CU_OK(cuLaunchKernel_ptsz(function("append"), 1, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr));
    ASSERT_CU_OK(cuStreamSynchronize_ptsz(nullptr));
  });
  other.join();
  EXPECT_NE(main_id, other_id);
  EXPECT_EQ((std::vector<std::uint32_t>{2}), read_log(log));

  // The legacy stream waits for the held per-thread stream.
  ASSERT_CU_OK(append(nullptr, log, 3));
  EXPECT_CU(CUDA_ERROR_NOT_READY, cuStreamQuery(nullptr));
  gate.open();
  ASSERT_CU_OK(cuStreamSynchronize(nullptr));
  EXPECT_EQ((std::vector<std::uint32_t>{2, 1, 3}), read_log(log));
}

TEST_F(StreamTest, EventsOrderStreamsAndMeasureTime) {
  Gate gate;
  CUstream producer = nullptr;
  CUstream consumer = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&producer, CU_STREAM_NON_BLOCKING));
  ASSERT_CU_OK(cuStreamCreate(&consumer, CU_STREAM_NON_BLOCKING));
  CUevent start = nullptr;
  CUevent stop = nullptr;
  CUevent untimed = nullptr;
  ASSERT_CU_OK(cuEventCreate(&start, CU_EVENT_DEFAULT));
  ASSERT_CU_OK(cuEventCreate(&stop, CU_EVENT_DEFAULT));
  ASSERT_CU_OK(cuEventCreate(&untimed, CU_EVENT_DISABLE_TIMING));
  CUdeviceptr log = zeroed_buffer(64);

  EXPECT_CU_OK(cuEventQuery(start));  // never recorded: complete
  float ms = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, cuEventElapsedTime_v2(&ms, start, stop));

  ASSERT_CU_OK(gate.hold(producer));
  ASSERT_CU_OK(cuEventRecord(start, producer));
  ASSERT_CU_OK(spin(producer, 2'000'000, 7));  // 2 ms on one wave
  ASSERT_CU_OK(append(producer, log, 1));
  ASSERT_CU_OK(cuEventRecord(stop, producer));
  ASSERT_CU_OK(cuEventRecord(untimed, producer));
  ASSERT_CU_OK(cuStreamWaitEvent(consumer, stop, 0));
  ASSERT_CU_OK(append(consumer, log, 2));

  EXPECT_CU(CUDA_ERROR_NOT_READY, cuEventQuery(stop));
  EXPECT_CU(CUDA_ERROR_NOT_READY, cuEventElapsedTime_v2(&ms, start, stop));
  EXPECT_CU(CUDA_ERROR_NOT_READY, cuStreamQuery(consumer));
  gate.open();
  ASSERT_CU_OK(cuEventSynchronize(stop));
  ASSERT_CU_OK(cuStreamSynchronize(consumer));
  EXPECT_EQ((std::vector<std::uint32_t>{1, 2}), read_log(log));
  ASSERT_CU_OK(cuEventElapsedTime_v2(&ms, start, stop));
  EXPECT_GE(ms, 1.99f);
  EXPECT_LT(ms, 200.0f);
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, cuEventElapsedTime(&ms, start, untimed));
  for (CUevent e : {start, stop, untimed}) ASSERT_CU_OK(cuEventDestroy_v2(e));
  for (CUstream s : {producer, consumer}) ASSERT_CU_OK(cuStreamDestroy_v2(s));
}

struct HostCall {
  std::atomic<int> calls{0};
  CUresult api_from_host_function = CUDA_SUCCESS;
  std::uint32_t seen_count = 0;
  const std::uint32_t* log = nullptr;
  CUstream callback_stream = nullptr;
  CUresult callback_status = CUDA_ERROR_UNKNOWN;
};

TEST_F(StreamTest, HostFunctionsRunInStreamOrder) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr log = zeroed_buffer(64);
  HostCall call;
  call.log = reinterpret_cast<const std::uint32_t*>(log);  // device memory is host memory in the fake
  ASSERT_CU_OK(spin(stream, 1'000'000, 0));
  ASSERT_CU_OK(append(stream, log, 1));
  ASSERT_CU_OK(cuLaunchHostFunc(stream, [](void* user) {
    auto* c = static_cast<HostCall*>(user);
    c->seen_count = c->log[0];
    c->api_from_host_function = cuCtxSynchronize();  // not allowed: would wait for itself
    c->calls.fetch_add(1);
  }, &call));
  ASSERT_CU_OK(cuStreamAddCallback(stream, [](CUstream s, CUresult status, void* user) {
    auto* c = static_cast<HostCall*>(user);
    c->callback_stream = s;
    c->callback_status = status;
    c->calls.fetch_add(1);
  }, &call, 0));
  ASSERT_CU_OK(append(stream, log, 2));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuStreamAddCallback(stream, [](CUstream, CUresult, void*) {}, nullptr, 1));
  ASSERT_CU_OK(cuStreamSynchronize(stream));
  EXPECT_EQ(2, call.calls.load());
  EXPECT_EQ(1u, call.seen_count);  // the host function saw the first append and not the second
  EXPECT_EQ(CUDA_ERROR_NOT_PERMITTED, call.api_from_host_function);
  EXPECT_EQ(stream, call.callback_stream);
  EXPECT_EQ(CUDA_SUCCESS, call.callback_status);
  EXPECT_EQ((std::vector<std::uint32_t>{1, 2}), read_log(log));
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

TEST_F(StreamTest, WaitValueHonoursEveryCondition) {
  std::uint64_t* word = nullptr;
  ASSERT_CU_OK(cuMemAllocHost_v2(reinterpret_cast<void**>(&word), 8));
  const auto address = reinterpret_cast<CUdeviceptr>(word);
  struct Case {
    unsigned flags;
    bool wide;
    std::uint64_t value;
    std::uint64_t blocked;  // memory contents that keep the wait blocked
    std::uint64_t released;
  };
  const Case cases[] = {
      {CU_STREAM_WAIT_VALUE_GEQ, false, 5, 4, 5},
      {CU_STREAM_WAIT_VALUE_GEQ, false, 2, 0xffffffffu, 2},  // wrapping: 0xffffffff is before 2
      {CU_STREAM_WAIT_VALUE_EQ, false, 9, 10, 9},
      {CU_STREAM_WAIT_VALUE_AND, false, 0x6, 0x9, 0x2},
      {CU_STREAM_WAIT_VALUE_NOR, false, 0xfffffff0u, 0xf, 0x7},
      {CU_STREAM_WAIT_VALUE_GEQ | CU_STREAM_WAIT_VALUE_FLUSH, true, 1ull << 40, (1ull << 40) - 1, 1ull << 40},
      {CU_STREAM_WAIT_VALUE_EQ, true, 1ull << 33, 1, 1ull << 33},
  };
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  for (const Case& c : cases) {
    __atomic_store_n(word, c.blocked, __ATOMIC_SEQ_CST);
    if (c.wide) {
      ASSERT_CU_OK(cuStreamWaitValue64(stream, address, c.value, c.flags));
    } else {
      ASSERT_CU_OK(cuStreamWaitValue32_v2(stream, address, static_cast<cuuint32_t>(c.value), c.flags));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_CU(CUDA_ERROR_NOT_READY, cuStreamQuery(stream)) << "flags " << c.flags << " value " << c.value;
    __atomic_store_n(word, c.released, __ATOMIC_SEQ_CST);
    EXPECT_CU_OK(cuStreamSynchronize(stream)) << "flags " << c.flags;
  }
  // A misaligned word is not supported (the real driver's answer on the H200), not an invalid value.
  EXPECT_CU(CUDA_ERROR_NOT_SUPPORTED, cuStreamWaitValue32(stream, address + 1, 0, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuStreamWaitValue32(stream, address, 0, 7));  // no such condition
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
  ASSERT_CU_OK(cuMemFreeHost(word));
}

TEST_F(StreamTest, WriteValueAndBatchMemOpsRunInOrder) {
  CUdeviceptr words = zeroed_buffer(16);
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  ASSERT_CU_OK(cuStreamWriteValue32(stream, words, 7, CU_STREAM_WRITE_VALUE_DEFAULT));
  ASSERT_CU_OK(cuStreamWriteValue64_v2(stream, words + 8, 1ull << 40, CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER));
  CUstreamBatchMemOpParams ops[3] = {};
  ops[0].waitValue.operation = CU_STREAM_MEM_OP_WAIT_VALUE_32;
  ops[0].waitValue.address = words;
  ops[0].waitValue.value = 7;
  ops[0].waitValue.flags = CU_STREAM_WAIT_VALUE_EQ;
  ops[1].writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_32;
  ops[1].writeValue.address = words + 4;
  ops[1].writeValue.value = 11;
  ops[2].flushRemoteWrites.operation = CU_STREAM_MEM_OP_FLUSH_REMOTE_WRITES;
  ASSERT_CU_OK(cuStreamBatchMemOp_v2(stream, 3, ops, 0));
  ASSERT_CU_OK(cuStreamSynchronize(stream));
  std::uint32_t host[4] = {};
  ASSERT_CU_OK(cuMemcpyDtoH_v2(host, words, 16));
  EXPECT_EQ(7u, host[0]);
  EXPECT_EQ(11u, host[1]);
  EXPECT_EQ(0u, host[2]);
  EXPECT_EQ(1u << 8, host[3]);
  EXPECT_CU(CUDA_ERROR_NOT_SUPPORTED, cuStreamWriteValue32(stream, words + 2, 1, 0));  // misaligned
  sluice_fake_counters counters{};
  sluice_fake_counters_get(&counters, sizeof(counters));
  EXPECT_EQ(4u, counters.memops_submitted);
  EXPECT_EQ(4u, counters.memops_executed);
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

TEST_F(StreamTest, StreamOrderedMemoryIsFreedWhenTheFreeRuns) {
  Gate gate;
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr buffer = 0;
  ASSERT_CU_OK(gate.hold(stream));
  ASSERT_CU_OK(cuMemAllocAsync(&buffer, 4096, stream));
  ASSERT_NE(0u, buffer);  // allocated at call time
  std::uint32_t value = 42;
  std::uint32_t count = 1;
  ASSERT_CU_OK(launch("fill", stream, {&buffer, &value, &count}));
  ASSERT_CU_OK(cuMemFreeAsync(buffer, stream));
  // Until the free runs, the memory is there.
  std::uint32_t staged = 0;
  ASSERT_CU_OK(cuMemcpyDtoH_v2(&staged, buffer, 4));
  EXPECT_EQ(0u, staged);
  gate.open();
  ASSERT_CU_OK(cuStreamSynchronize(stream));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuMemcpyDtoH_v2(&staged, buffer, 4));
  CUpointer_attribute attribute = CU_POINTER_ATTRIBUTE_MEMORY_TYPE;
  unsigned type = 99;
  void* data[] = {&type};
  ASSERT_CU_OK(cuPointerGetAttributes(1, &attribute, data, buffer));
  EXPECT_EQ(0u, type);
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

TEST_F(StreamTest, StreamQueriesReportFlagsPrioritiesAndContext) {
  int least = 1;
  int greatest = 1;
  ASSERT_CU_OK(cuCtxGetStreamPriorityRange(&least, &greatest));
  EXPECT_EQ(0, least);
  EXPECT_EQ(-5, greatest);
  CUstream high = nullptr;
  ASSERT_CU_OK(cuStreamCreateWithPriority(&high, CU_STREAM_NON_BLOCKING, -100));
  int priority = 0;
  unsigned flags = 0;
  CUcontext owner = nullptr;
  ASSERT_CU_OK(cuStreamGetPriority(high, &priority));
  ASSERT_CU_OK(cuStreamGetFlags(high, &flags));
  ASSERT_CU_OK(cuStreamGetCtx(high, &owner));
  EXPECT_EQ(-5, priority);  // clamped to the range
  EXPECT_EQ(static_cast<unsigned>(CU_STREAM_NON_BLOCKING), flags);
  EXPECT_EQ(ctx_, owner);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuStreamCreate(&high, 4));
  ASSERT_CU_OK(cuStreamDestroy_v2(high));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, cuStreamQuery(high));
}

}  // namespace
}  // namespace sluice::fake::testing
