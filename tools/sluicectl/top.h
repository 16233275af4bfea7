// `sluicectl top`: one frame of the live view from sluiced's status, ps and queue replies.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace sluice::ctl {

// Kills per client pid at the previous frame, to show which clients were killed since.
using KillCounts = std::map<std::uint32_t, std::uint64_t>;

// Status, then the clients (class, queue, GPU share, kills), the kills since the previous frame
// (`previous`: null on the first), then the queue. Plain text: no escape codes.
std::string format_top(const nlohmann::json& status, const nlohmann::json& ps, const nlohmann::json& queue,
                       const KillCounts* previous, double interval_s);
KillCounts kill_counts(const nlohmann::json& ps);

// The frame for a terminal of `rows` lines and `columns` columns (0: unknown): cursor home, each
// line cut to the width and cleared to its end, the rest of the screen cleared, at most rows - 1
// lines, so that the terminal never wraps or scrolls.
std::string in_place(const std::string& frame, unsigned rows, unsigned columns);

}  // namespace sluice::ctl
