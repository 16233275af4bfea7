// Validation of messages copied out of shared memory, and the segment and prediction table helpers.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstring>
#include <string>
#include <vector>

#include "sluice/protocol/codec.h"
#include "sluice/protocol/segment.h"

namespace sluice::protocol {
namespace {

OpMsg valid_kernel() {
  OpMsg op{};
  op.type = static_cast<std::uint16_t>(MsgType::op);
  op.kind = OpKind::kernel;
  op.state = OpState::held;
  op.device = 0;
  op.seq = 7;
  op.stream = 0x1234;
  op.kernel_id = 0xabc;
  op.grid[0] = op.grid[1] = op.grid[2] = 1;
  op.block[0] = 128;
  op.block[1] = op.block[2] = 1;
  op.call_ns = 100;
  return op;
}

std::string error_of(const Slot& slot) {
  auto decoded = decode_client_message(slot);
  return decoded ? std::string("(accepted)") : decoded.error().message;
}

TEST(Codec, AcceptsAValidLaunchDescriptor) {
  auto decoded = decode_client_message(encode(valid_kernel()));
  ASSERT_TRUE(decoded) << decoded.error().message;
  ASSERT_TRUE(std::holds_alternative<OpMsg>(*decoded));
  EXPECT_EQ(std::get<OpMsg>(*decoded).seq, 7u);
}

TEST(Codec, NamesWhatIsWrongWithABadDescriptor) {
  OpMsg op = valid_kernel();
  op.grid[1] = 0;
  EXPECT_EQ(error_of(encode(op)), "op message seq 7: grid dimension 1 is 0");

  op = valid_kernel();
  op.block[0] = 2048;
  EXPECT_EQ(error_of(encode(op)), "op message seq 7: 2048 threads per block");

  op = valid_kernel();
  op.kind = static_cast<OpKind>(9);
  EXPECT_EQ(error_of(encode(op)), "op message seq 7: unknown kind 9");

  op = valid_kernel();
  op.device = 300;
  EXPECT_EQ(error_of(encode(op)), "op message seq 7: op message: device 300 is outside -1..63");

  op = valid_kernel();
  op.state = OpState::submitted;
  EXPECT_EQ(error_of(encode(op)), "op message seq 7: submitted without a submit time");

  op = valid_kernel();
  op.kind = OpKind::copy;
  EXPECT_EQ(error_of(encode(op)), "op message seq 7: a copy has a grid or block");

  op = valid_kernel();
  op.seq = 0;
  EXPECT_EQ(error_of(encode(op)), "op message seq 0: sequence number 0");
}

TEST(Codec, RejectsUnknownTypesAndBadNames) {
  Slot slot{};
  slot.bytes[0] = 99;
  EXPECT_EQ(error_of(slot), "unknown message type 99");

  KernelNameMsg name{};
  name.type = static_cast<std::uint16_t>(MsgType::kernel_name);
  name.kernel_id = 5;
  name.total = 10;
  name.offset = 8;
  name.length = 4;
  std::memcpy(name.text, "abcd", 4);
  EXPECT_EQ(error_of(encode(name)), "kernel_name message for 0x5: chunk 8+4 runs past the name's 10 bytes");
  name.offset = 0;
  name.text[2] = '\n';
  EXPECT_EQ(error_of(encode(name)), "kernel_name message for 0x5: control character 0xa at 2");
  name.text[2] = 'c';
  EXPECT_TRUE(decode_client_message(encode(name)));
}

TEST(Codec, ValidatesSamplesStatusAndDecisions) {
  SampleMsg sample{};
  sample.type = static_cast<std::uint16_t>(MsgType::sample);
  sample.kernel_id = 1;
  sample.duration_ns = 0;
  EXPECT_EQ(error_of(encode(sample)), "sample message for 0x1: duration 0 ns");
  sample.duration_ns = 5000;
  EXPECT_TRUE(decode_client_message(encode(sample)));

  StatusMsg status{};
  status.type = static_cast<std::uint16_t>(MsgType::status);
  status.flags = 0x80;
  EXPECT_EQ(error_of(encode(status)), "status message: unknown flags 0x80");

  DecisionMsg decision{};
  decision.type = static_cast<std::uint16_t>(MsgType::decision);
  decision.decision_seq = 1;
  decision.mode = static_cast<GateMode>(7);
  auto decoded = decode_decision(encode(decision));
  ASSERT_FALSE(decoded);
  EXPECT_EQ(decoded.error().message, "decision: unknown gate mode 7");
  decision.mode = GateMode::shut;
  EXPECT_TRUE(decode_decision(encode(decision)));
}

TEST(Codec, ValidatesTheAbi11And12Additions) {
  StatusMsg status{};
  status.type = static_cast<std::uint16_t>(MsgType::status);
  status.sm_count = 132;
  EXPECT_TRUE(decode_client_message(encode(status)));
  status.sm_count = 100000;
  EXPECT_EQ(error_of(encode(status)), "status message: 100000 SMs (at most 4096)");

  KillWordMsg word{};
  word.type = static_cast<std::uint16_t>(MsgType::kill_word);
  word.offset = 16;
  EXPECT_TRUE(decode_client_message(encode(word)));
  word.offset = 6;
  EXPECT_EQ(error_of(encode(word)), "kill word message: offset 6");
  word.offset = 0;
  word.device = -1;
  EXPECT_EQ(error_of(encode(word)), "kill word message: device -1");

  DecisionMsg decision{};
  decision.type = static_cast<std::uint16_t>(MsgType::decision);
  decision.decision_seq = 1;
  decision.route = Route::partition;
  EXPECT_EQ(decode_decision(encode(decision)).error().message, "decision: partition of 0 SMs");
  decision.partition_sms = 112;
  EXPECT_TRUE(decode_decision(encode(decision)));
  decision.route = static_cast<Route>(9);
  EXPECT_EQ(decode_decision(encode(decision)).error().message, "decision: unknown route 9");
}

TEST(Segment, SharingModeAndMpsPipeDirectoryReachTheClient) {
  SegmentLayout layout = default_layout();
  std::vector<std::byte> memory(layout.segment_bytes);
  init_segment(memory.data(), layout, 42, 3);
  EXPECT_EQ(read_mps_pipe_dir(memory.data()), "") << "timeslice by default";
  write_sharing(memory.data(), SharingMode::mps, "/run/sluice/mps/pipe");
  EXPECT_EQ(read_mps_pipe_dir(memory.data()), "/run/sluice/mps/pipe");
  write_sharing(memory.data(), SharingMode::mps, std::string(kPathBytes, 'x'));
  EXPECT_EQ(read_mps_pipe_dir(memory.data()), "") << "too long: not written";
  write_sharing(memory.data(), SharingMode::mps, "relative/dir");
  EXPECT_EQ(read_mps_pipe_dir(memory.data()), "") << "only absolute paths";
  write_sharing(memory.data(), SharingMode::timeslice, "/run/sluice/mps/pipe");
  EXPECT_EQ(read_mps_pipe_dir(memory.data()), "") << "timeslice mode announces no directory";
}

TEST(Segment, ReadLayoutAcceptsWhatInitWroteAndRejectsTampering) {
  SegmentLayout layout = default_layout();
  std::vector<std::byte> memory(layout.segment_bytes);
  init_segment(memory.data(), layout, 42, 3);
  auto read = read_layout(memory.data(), memory.size());
  ASSERT_TRUE(read) << read.error().message;
  EXPECT_EQ(read->to_client_offset, layout.to_client_offset);

  EXPECT_FALSE(read_layout(memory.data(), memory.size() - 4096)) << "mapped size disagrees";

  auto* header = reinterpret_cast<SegmentHeader*>(memory.data());
  header->abi_major = kAbiMajor + 1;
  auto wrong_version = read_layout(memory.data(), memory.size());
  ASSERT_FALSE(wrong_version);
  EXPECT_NE(wrong_version.error().message.find("segment ABI"), std::string::npos);

  init_segment(memory.data(), layout, 42, 3);
  header->to_client_offset = layout.segment_bytes - 64;  // the ring would run off the end
  EXPECT_FALSE(read_layout(memory.data(), memory.size()));
}

TEST(Segment, PredictionTableStoresUpdatesAndMisses) {
  std::vector<PredictionSlot> table(64);
  std::uint64_t key = prediction_key(0xfeed, size_bucket(256));
  EXPECT_EQ(lookup_prediction(table.data(), 64, key), 0u);
  ASSERT_TRUE(publish_prediction(table.data(), 64, key, 5000));
  EXPECT_EQ(lookup_prediction(table.data(), 64, key), 5000u);
  ASSERT_TRUE(publish_prediction(table.data(), 64, key, 7000));
  EXPECT_EQ(lookup_prediction(table.data(), 64, key), 7000u);
  EXPECT_EQ(lookup_prediction(table.data(), 64, prediction_key(0xfeed, kAnyBucket)), 0u);
  // Fill the table: publishing eventually fails instead of probing forever.
  int stored = 0;
  for (std::uint64_t k = 1; k < 1000; ++k) stored += publish_prediction(table.data(), 64, prediction_key(k, 0), k);
  EXPECT_LE(stored, 63);
  EXPECT_EQ(size_bucket(1), 0u);
  EXPECT_EQ(size_bucket(132), 7u);
}

}  // namespace
}  // namespace sluice::protocol
