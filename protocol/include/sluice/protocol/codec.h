// Decoding and validation of ring messages. The receiver copies a slot out of shared memory once
// (ring.h) and hands the copy here; a message that fails validation is reported with what was
// wrong and dropped, never trusted.
//
// Thread rules: pure functions.
#pragma once

#include <cstring>
#include <variant>

#include "sluice/common/result.h"
#include "sluice/protocol/layout.h"

namespace sluice::protocol {

inline constexpr std::int16_t kMaxDevices = 64;
inline constexpr std::uint32_t kMaxThreadsPerBlock = 1024;
inline constexpr std::uint32_t kMaxSms = 4096;
inline constexpr std::uint64_t kMaxSampleNs = 3600ull * 1000 * 1000 * 1000;  // one hour

using ClientMessage =
    std::variant<OpMsg, OpSubmittedMsg, KernelNameMsg, StatusMsg, SampleMsg, GoodbyeMsg, KillWordMsg>;

inline const char* op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kernel: return "kernel";
    case OpKind::copy: return "copy";
    case OpKind::memset: return "memset";
    case OpKind::graph: return "graph";
    case OpKind::kCount: break;
  }
  return "?";
}

inline const char* class_name(Class cls) { return cls == Class::rt ? "rt" : "be"; }

template <typename Msg>
Slot encode(const Msg& message) {
  static_assert(sizeof(Msg) == sizeof(Slot) && kWireSafe<Msg>);
  Slot slot;
  std::memcpy(&slot, &message, sizeof(slot));
  return slot;
}

inline MsgType message_type(const Slot& slot) {
  std::uint16_t type = 0;
  std::memcpy(&type, slot.bytes, sizeof(type));
  return static_cast<MsgType>(type);
}

namespace detail {

template <typename Msg>
Msg copy_as(const Slot& slot) {
  Msg message;
  std::memcpy(&message, &slot, sizeof(message));
  return message;
}

inline Status check_device(const char* what, std::int16_t device) {
  if (device < -1 || device >= kMaxDevices) {
    return make_error("{}: device {} is outside -1..{}", what, device, kMaxDevices - 1);
  }
  return {};
}

inline Status check_op(const OpMsg& op) {
  auto fail = [&](std::string problem) {
    return make_error("op message seq {}: {}", op.seq, problem);
  };
  if (op.kind >= OpKind::kCount) return fail(fmt::format("unknown kind {}", static_cast<int>(op.kind)));
  if (op.state != OpState::held && op.state != OpState::submitted) {
    return fail(fmt::format("unknown state {}", static_cast<int>(op.state)));
  }
  if (auto status = check_device("op message", op.device); !status) {
    return fail(status.error().message);
  }
  if ((op.flags & ~kOpCooperative) != 0) return fail(fmt::format("unknown flags {:#x}", op.flags));
  if (op.seq == 0) return fail("sequence number 0");
  if (op.call_ns == 0) return fail("no call time");
  if (op.state == OpState::submitted && op.submit_ns == 0) return fail("submitted without a submit time");
  if (op.state == OpState::held && op.submit_ns != 0) return fail("held with a submit time");
  if (op.kind == OpKind::kernel) {
    std::uint64_t threads = 1;
    for (int axis = 0; axis < 3; ++axis) {
      if (op.grid[axis] == 0) return fail(fmt::format("grid dimension {} is 0", axis));
      if (op.block[axis] == 0) return fail(fmt::format("block dimension {} is 0", axis));
      threads *= op.block[axis];
    }
    if (threads > kMaxThreadsPerBlock) return fail(fmt::format("{} threads per block", threads));
  } else {
    for (int axis = 0; axis < 3; ++axis) {
      if (op.grid[axis] != 0 || op.block[axis] != 0) {
        return fail(fmt::format("a {} has a grid or block", op_kind_name(op.kind)));
      }
    }
    if (op.kernel_id != 0 && op.kind != OpKind::graph) {
      return fail(fmt::format("a {} has a kernel identity", op_kind_name(op.kind)));
    }
  }
  return {};
}

inline Status check_name(const KernelNameMsg& name) {
  auto fail = [&](std::string problem) {
    return make_error("kernel_name message for {:#x}: {}", name.kernel_id, problem);
  };
  if (name.kernel_id == 0) return fail("kernel identity 0");
  if (name.total == 0 || name.total > kMaxNameBytes) return fail(fmt::format("name length {}", name.total));
  if (name.length == 0 || name.length > kNameChunkBytes) return fail(fmt::format("chunk length {}", name.length));
  if (std::uint32_t{name.offset} + name.length > name.total) {
    return fail(fmt::format("chunk {}+{} runs past the name's {} bytes", name.offset, name.length, name.total));
  }
  for (std::size_t i = 0; i < name.length; ++i) {
    auto c = static_cast<unsigned char>(name.text[i]);
    if (c < 0x20 || c == 0x7f) return fail(fmt::format("control character {:#x} at {}", c, name.offset + i));
  }
  return {};
}

}  // namespace detail

// Validates one client -> daemon message.
inline Result<ClientMessage> decode_client_message(const Slot& slot) {
  switch (message_type(slot)) {
    case MsgType::op: {
      auto op = detail::copy_as<OpMsg>(slot);
      if (auto status = detail::check_op(op); !status) return std::move(status).take_error();
      return ClientMessage{op};
    }
    case MsgType::op_submitted: {
      auto done = detail::copy_as<OpSubmittedMsg>(slot);
      if (done.seq == 0) return make_error("op_submitted message: sequence number 0");
      if (done.submit_ns == 0) return make_error("op_submitted message seq {}: no submit time", done.seq);
      if (auto status = detail::check_device("op_submitted message", done.device); !status) {
        return std::move(status).take_error();
      }
      return ClientMessage{done};
    }
    case MsgType::kernel_name: {
      auto name = detail::copy_as<KernelNameMsg>(slot);
      if (auto status = detail::check_name(name); !status) return std::move(status).take_error();
      return ClientMessage{name};
    }
    case MsgType::status: {
      auto status_msg = detail::copy_as<StatusMsg>(slot);
      if (auto status = detail::check_device("status message", status_msg.device); !status) {
        return std::move(status).take_error();
      }
      if ((status_msg.flags & ~kStatusBusy) != 0) {
        return make_error("status message: unknown flags {:#x}", status_msg.flags);
      }
      if (status_msg.sm_count > kMaxSms) {
        return make_error("status message: {} SMs (at most {})", status_msg.sm_count, kMaxSms);
      }
      return ClientMessage{status_msg};
    }
    case MsgType::sample: {
      auto sample = detail::copy_as<SampleMsg>(slot);
      if (sample.kind >= OpKind::kCount) {
        return make_error("sample message: unknown kind {}", static_cast<int>(sample.kind));
      }
      if (auto status = detail::check_device("sample message", sample.device); !status) {
        return std::move(status).take_error();
      }
      if (sample.duration_ns == 0 || sample.duration_ns > kMaxSampleNs) {
        return make_error("sample message for {:#x}: duration {} ns", sample.kernel_id, sample.duration_ns);
      }
      if (sample.kernel_id == 0) return make_error("sample message: kernel identity 0");
      return ClientMessage{sample};
    }
    case MsgType::goodbye: return ClientMessage{detail::copy_as<GoodbyeMsg>(slot)};
    case MsgType::kill_word: {
      auto word = detail::copy_as<KillWordMsg>(slot);
      if (word.device < 0 || word.device >= kMaxDevices) {
        return make_error("kill word message: device {}", word.device);
      }
      if (word.offset % 4 != 0 || word.offset > (std::uint64_t{1} << 40)) {
        return make_error("kill word message: offset {}", word.offset);
      }
      return ClientMessage{word};
    }
    default: break;
  }
  return make_error("unknown message type {}", static_cast<unsigned>(message_type(slot)));
}

// Validates one daemon -> client message (the client trusts the daemon less than itself too).
inline Result<DecisionMsg> decode_decision(const Slot& slot) {
  if (message_type(slot) != MsgType::decision) {
    return make_error("unknown message type {} from the daemon", static_cast<unsigned>(message_type(slot)));
  }
  auto decision = detail::copy_as<DecisionMsg>(slot);
  if (auto status = detail::check_device("decision", decision.device); !status) {
    return std::move(status).take_error();
  }
  if (decision.cls != Class::rt && decision.cls != Class::be) {
    return make_error("decision: unknown class {}", static_cast<int>(decision.cls));
  }
  if (decision.mode != GateMode::open && decision.mode != GateMode::shut) {
    return make_error("decision: unknown gate mode {}", static_cast<int>(decision.mode));
  }
  if (decision.decision_seq == 0) return make_error("decision: sequence number 0");
  if (decision.route != Route::full && decision.route != Route::partition) {
    return make_error("decision: unknown route {}", static_cast<int>(decision.route));
  }
  if (decision.route == Route::partition && (decision.partition_sms == 0 || decision.partition_sms > kMaxSms)) {
    return make_error("decision: partition of {} SMs", decision.partition_sms);
  }
  return decision;
}

}  // namespace sluice::protocol
