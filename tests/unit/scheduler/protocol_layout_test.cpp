// Golden test of the shared-memory layout: every size and field offset that both the shim and
// sluiced rely on is printed and compared with golden/protocol_layout.txt. A change here means a
// protocol change: bump kAbiMajor (or kAbiMinor for appended fields), then rewrite the golden file
// by running this test once with SLUICE_UPDATE_GOLDEN=1.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "sluice/protocol/layout.h"
#include "sluice/protocol/segment.h"

namespace sluice::protocol {
namespace {

#define FIELD(type, field) out << "  " #field " " << offsetof(type, field) << "\n"
#define STRUCT(type) out << #type " size " << sizeof(type) << " align " << alignof(type) << "\n"

std::string describe_layout() {
  std::ostringstream out;
  out << "abi " << kAbiMajor << "." << kAbiMinor << " magic " << std::hex << kMagic << std::dec << "\n";
  STRUCT(SegmentHeader);
  FIELD(SegmentHeader, magic); FIELD(SegmentHeader, abi_major); FIELD(SegmentHeader, abi_minor);
  FIELD(SegmentHeader, header_bytes); FIELD(SegmentHeader, slot_bytes);
  FIELD(SegmentHeader, segment_bytes); FIELD(SegmentHeader, daemon_epoch);
  FIELD(SegmentHeader, client_id); FIELD(SegmentHeader, to_daemon_offset);
  FIELD(SegmentHeader, to_client_offset); FIELD(SegmentHeader, predictions_offset);
  FIELD(SegmentHeader, to_daemon_slots); FIELD(SegmentHeader, to_client_slots);
  FIELD(SegmentHeader, prediction_slots); FIELD(SegmentHeader, sharing_mode);
  FIELD(SegmentHeader, mps_pipe_dir);
  STRUCT(RingControl);
  FIELD(RingControl, head); FIELD(RingControl, tail); FIELD(RingControl, consumer_waiting);
  STRUCT(Slot);
  STRUCT(OpMsg);
  FIELD(OpMsg, type); FIELD(OpMsg, kind); FIELD(OpMsg, state); FIELD(OpMsg, device);
  FIELD(OpMsg, flags); FIELD(OpMsg, seq); FIELD(OpMsg, stream); FIELD(OpMsg, kernel_id);
  FIELD(OpMsg, grid); FIELD(OpMsg, block); FIELD(OpMsg, bytes); FIELD(OpMsg, call_ns);
  FIELD(OpMsg, submit_ns); FIELD(OpMsg, predicted_ns); FIELD(OpMsg, shared_mem);
  STRUCT(OpSubmittedMsg);
  FIELD(OpSubmittedMsg, device); FIELD(OpSubmittedMsg, seq); FIELD(OpSubmittedMsg, submit_ns);
  STRUCT(KernelNameMsg);
  FIELD(KernelNameMsg, offset); FIELD(KernelNameMsg, total); FIELD(KernelNameMsg, length);
  FIELD(KernelNameMsg, kernel_id); FIELD(KernelNameMsg, module_hash); FIELD(KernelNameMsg, text);
  STRUCT(StatusMsg);
  FIELD(StatusMsg, device); FIELD(StatusMsg, flags); FIELD(StatusMsg, applied_decision);
  FIELD(StatusMsg, inflight_ns); FIELD(StatusMsg, held_ops); FIELD(StatusMsg, retired_seq);
  FIELD(StatusMsg, completed_ns); FIELD(StatusMsg, submitted_ns); FIELD(StatusMsg, sent_ns);
  FIELD(StatusMsg, sm_count); FIELD(StatusMsg, cc_major); FIELD(StatusMsg, cc_minor);
  STRUCT(SampleMsg);
  FIELD(SampleMsg, kind); FIELD(SampleMsg, device); FIELD(SampleMsg, kernel_id);
  FIELD(SampleMsg, work); FIELD(SampleMsg, duration_ns); FIELD(SampleMsg, seq);
  STRUCT(GoodbyeMsg);
  STRUCT(KillWordMsg);
  FIELD(KillWordMsg, device); FIELD(KillWordMsg, offset); FIELD(KillWordMsg, ipc_handle);
  STRUCT(DecisionMsg);
  FIELD(DecisionMsg, device); FIELD(DecisionMsg, cls); FIELD(DecisionMsg, mode);
  FIELD(DecisionMsg, route); FIELD(DecisionMsg, solo); FIELD(DecisionMsg, decision_seq);
  FIELD(DecisionMsg, grant_ns); FIELD(DecisionMsg, copy_chunk_bytes);
  FIELD(DecisionMsg, default_prediction_ns); FIELD(DecisionMsg, marker_ns);
  FIELD(DecisionMsg, kill_epoch); FIELD(DecisionMsg, partition_sms);
  STRUCT(PredictionSlot);
  FIELD(PredictionSlot, key); FIELD(PredictionSlot, value_ns);
  STRUCT(Hello);
  FIELD(Hello, magic); FIELD(Hello, role); FIELD(Hello, pid); FIELD(Hello, label);
  FIELD(Hello, job_length_ms); FIELD(Hello, deadline_us);
  STRUCT(Welcome);
  FIELD(Welcome, status); FIELD(Welcome, client_id); FIELD(Welcome, daemon_epoch);
  FIELD(Welcome, segment_bytes); FIELD(Welcome, cls); FIELD(Welcome, reason);
  SegmentLayout layout = default_layout();
  out << "segment to_daemon " << layout.to_daemon_offset << " to_client " << layout.to_client_offset
      << " predictions " << layout.predictions_offset << " bytes " << layout.segment_bytes << "\n";
  out << "message types op " << static_cast<int>(MsgType::op) << " op_submitted "
      << static_cast<int>(MsgType::op_submitted) << " kernel_name "
      << static_cast<int>(MsgType::kernel_name) << " status " << static_cast<int>(MsgType::status)
      << " sample " << static_cast<int>(MsgType::sample) << " goodbye "
      << static_cast<int>(MsgType::goodbye) << " kill_word " << static_cast<int>(MsgType::kill_word)
      << " decision " << static_cast<int>(MsgType::decision)
      << "\n";
  return out.str();
}

TEST(ProtocolLayout, MatchesGoldenFile) {
  if (std::getenv("SLUICE_UPDATE_GOLDEN") != nullptr) {  // after a deliberate protocol change
    std::ofstream(SLUICE_GOLDEN_DIR "/protocol_layout.txt") << describe_layout();
  }
  std::ifstream golden(SLUICE_GOLDEN_DIR "/protocol_layout.txt");
  ASSERT_TRUE(golden) << "missing " SLUICE_GOLDEN_DIR "/protocol_layout.txt";
  std::stringstream expected;
  expected << golden.rdbuf();
  std::string actual = describe_layout();
  EXPECT_EQ(actual, expected.str()) << "the shared-memory layout changed; new layout:\n" << actual;
}

TEST(ProtocolLayout, EncodesLittleEndianFieldsAtTheirOffsets) {
  OpMsg op{};
  op.type = static_cast<std::uint16_t>(MsgType::op);
  op.seq = 0x0102030405060708ull;
  op.grid[1] = 0xaabbccdd;
  unsigned char bytes[sizeof(op)];
  std::memcpy(bytes, &op, sizeof(op));
  EXPECT_EQ(bytes[0], 1);
  EXPECT_EQ(bytes[8], 0x08);
  EXPECT_EQ(bytes[15], 0x01);
  EXPECT_EQ(bytes[36], 0xdd);
  EXPECT_EQ(bytes[39], 0xaa);
}

TEST(ProtocolLayout, DefaultSegmentFitsEveryRegion) {
  SegmentLayout layout = default_layout();
  EXPECT_EQ(layout.to_daemon_offset, kHeaderBytes);
  EXPECT_LE(layout.to_daemon_offset + sizeof(RingControl) + kToDaemonSlots * sizeof(Slot), layout.to_client_offset);
  EXPECT_LE(layout.to_client_offset + sizeof(RingControl) + kToClientSlots * sizeof(Slot), layout.predictions_offset);
  EXPECT_LE(layout.predictions_offset + kPredictionSlots * sizeof(PredictionSlot), layout.segment_bytes);
  EXPECT_EQ(layout.segment_bytes % 4096, 0u);
}

}  // namespace
}  // namespace sluice::protocol
