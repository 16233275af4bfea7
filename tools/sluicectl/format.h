// Human-readable renderings of sluiced's control replies (sluice/scheduler/control.h). The --json
// forms print the replies themselves.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace sluice::ctl {

std::string format_status(const nlohmann::json& status);
std::string format_ps(const nlohmann::json& ps);
std::string format_queue(const nlohmann::json& queue);
// `ps --all`: the clients, then the traced processes that bypass sluice (status "unmanaged"),
// each row marked "unmanaged".
std::string format_ps_all(const nlohmann::json& ps_and_unmanaged);
std::string format_policy(const nlohmann::json& policy);

// "1.5 ms", "250 us", "unlimited" (null), for a value in microseconds.
std::string format_micros(const nlohmann::json& micros);
std::string format_seconds(double seconds);

}  // namespace sluice::ctl
