// sluicectl's requests (see sluice/scheduler/control.h).
#include <unistd.h>

#include <algorithm>

#include "server_impl.h"
#include "sluice/common/clock.h"
#include "sluice/common/log.h"
#include "sluice/protocol/codec.h"
#include "sluice/scheduler/control.h"

namespace sluice::sched {

using nlohmann::json;

namespace {

json error_reply(const char* code, const std::string& message) {
  return {{"ok", false}, {"code", code}, {"error", message}};
}

// Microseconds, or null for "unlimited".
json micros(std::uint64_t ns) {
  if (ns == protocol::kUnlimited) return nullptr;
  return static_cast<double>(ns) / 1000.0;
}

}  // namespace

bool Server::Impl::privileged(const Session& session) const {
  if (session.peer.uid == 0 || session.peer.uid == geteuid()) return true;
  // sluiced --admin-group: members of the group (primary or supplementary when they connected, as
  // the kernel reports them) may use the mutating requests too.
  if (!options_.admin_group) return false;
  const auto& groups = session.peer.groups;
  return session.peer.gid == *options_.admin_group ||
         std::find(groups.begin(), groups.end(), *options_.admin_group) != groups.end();
}

void Server::Impl::on_control(Session& session, const std::string& frame) {
  json reply;
  json request = json::parse(frame, nullptr, false);
  if (request.is_discarded() || !request.is_object() || !request.contains("cmd") || !request["cmd"].is_string()) {
    reply = error_reply(control::kCodeBadRequest, "expected a JSON object with a string \"cmd\"");
    metrics_.note_protocol_error("bad_control_request");
  } else {
    reply = handle_control(session, request);
  }
  queue_reply(session, reply.dump());
}

json Server::Impl::handle_control(const Session& session, const json& request) {
  const std::string cmd = request["cmd"].get<std::string>();
  std::uint64_t now = now_ns();
  if (cmd == "status") return status_json(now);
  if (cmd == "ps") return ps_json(now);
  if (cmd == "metrics") return {{"ok", true}, {"text", metrics::render(status_json(now), ps_json(now), metrics_)}};
  if (cmd == "queue") {
    std::size_t limit = 1000;
    if (request.contains("limit") && request["limit"].is_number_unsigned()) limit = request["limit"].get<std::size_t>();
    return queue_json(now, limit);
  }
  if (cmd == "policy") {
    auto policy = policy_.current();
    return {{"ok", true}, {"source", policy->source}, {"generation", policy_.generation()}, {"policy", policy_to_json(*policy)}};
  }
  if (cmd == "reload") {
    if (!privileged(session)) {
      return error_reply(control::kCodePermission, "reloading the policy needs root or the daemon's user");
    }
    do_reload();
    if (!last_reload_error_.empty()) {
      return error_reply(control::kCodeFailed, "the previous policy stays in force: " + last_reload_error_);
    }
    return {{"ok", true}, {"source", policy_.current()->source}, {"rules", policy_.current()->rules.size()}};
  }
  if (cmd == "set-class") return set_class(session, request);
  if (cmd == "client-env") {
    // What a client sets before its driver initializes (connection.cpp).
    json reply = {{"ok", true}};
    if (mode_ == protocol::SharingMode::mps) reply["CUDA_MPS_PIPE_DIRECTORY"] = options_.mps.pipe_dir;
    return reply;
  }
  return error_reply(control::kCodeBadRequest, fmt::format("unknown command '{}'", cmd));
}

json Server::Impl::set_class(const Session& session, const json& request) {
  if (!request.contains("pid") || !request["pid"].is_number_unsigned() || !request.contains("class") ||
      !request["class"].is_string()) {
    return error_reply(control::kCodeBadRequest, "set-class needs \"pid\" (a number) and \"class\" (a string)");
  }
  auto pid = request["pid"].get<std::uint32_t>();
  std::string name = request["class"].get<std::string>();
  ShimClient* target = nullptr;
  for (auto& [id, client] : clients_) {
    if (client->identity.pid == pid) target = client.get();
  }
  if (target == nullptr) return error_reply(control::kCodeNotFound, fmt::format("no client with pid {}", pid));

  Assignment current = assignment_of(*target);
  std::optional<ClassParams> wanted;
  if (name != "policy") {
    auto cap = class_from_label(name);
    if (!cap) return error_reply(control::kCodeBadRequest, fmt::format("unknown class '{}' (rt, be, be:N, policy)", name));
    ClassParams params = current.params;
    params.cls = cap->cls;
    if (cap->cls == Class::rt && current.params.cls != Class::rt) params.priority = 0;
    if (cap->cls == Class::be) params.priority = cap->priority.value_or(current.params.cls == Class::be ? current.params.priority : 0);
    wanted = params;
  }
  // The daemon's user and root may do anything; a client's owner may only lower it.
  if (!privileged(session)) {
    ClassParams after = wanted ? *wanted : assign(*policy_.current(), target->identity).params;
    bool owner = session.peer.uid == target->identity.uid;
    if (!owner || is_lower(current.params, after)) {
      return error_reply(control::kCodePermission,
                         owner ? "raising a client's class needs root or the daemon's user"
                               : "only root, the daemon's user or the client's owner may change its class");
    }
  }
  target->override_params = wanted;
  Assignment assignment = assignment_of(*target);
  scheduler_.reassign(target->id, assignment, wanted.has_value(), now_ns());
  log::info("client {} (pid {}): class set to {} by pid {} (uid {})", target->id, pid,
            protocol::class_name(assignment.params.cls), session.peer.pid, session.peer.uid);
  return {{"ok", true}, {"pid", pid}, {"class", protocol::class_name(assignment.params.cls)},
          {"priority", assignment.params.priority}, {"rule", assignment.rule}};
}

json Server::Impl::mps_json() const {
  if (options_.mode != protocol::SharingMode::mps) return nullptr;
  json out = {{"pipe_dir", options_.mps.pipe_dir}, {"log_dir", options_.mps.log_dir}};
  if (mps_) {
    out["state"] = mps_state_name(mps_->state());
    out["control"] = mps_->program();
    out["restarts"] = mps_->restarts();
  } else {
    out["state"] = "unavailable";
    out["error"] = mps_error_;
  }
  return out;
}

json Server::Impl::status_json(std::uint64_t now) const {
  auto policy = policy_.current();
  const SchedulerParams& params = scheduler_.params();
  json devices = json::array();
  for (const DeviceView& d : scheduler_.devices(now)) {
    devices.push_back({{"device", d.device},
                       {"gate", d.mode == GateMode::shut ? "shut" : "open"},
                       {"rt_active", d.rt_active},
                       {"budget_us", micros(d.budget_ns)},
                       {"be_inflight_us", micros(d.be_inflight_ns)},
                       {"be_committed_us", micros(d.be_committed_ns)},
                       {"rt_idle_ms", static_cast<double>(d.rt_idle_ns) / 1e6},
                       {"rt_busy_clients", d.rt_busy_clients},
                       {"be_waiting_clients", d.be_waiting_clients},
                       {"route", d.route == protocol::Route::partition ? "partition" : "full"},
                       {"sm_count", d.sm_count == 0 ? json(nullptr) : json(d.sm_count)},
                       {"sm_count_used", d.sms_used},
                       {"compute_capability", d.sm_count == 0 ? json(nullptr) : json(fmt::format("{}.{}", d.cc_major, d.cc_minor))},
                       {"reserve_sms", d.reserve_sms},
                       {"partition_sms", d.partition_sms},
                       {"kill_epoch", d.kill_epoch},
                       {"kills", d.kills}});
  }
  std::size_t rt = 0;
  for (const auto& [id, client] : clients_) rt += scheduler_.is_rt(id) ? 1 : 0;
  const SchedulerCounters& c = scheduler_.counters();
  return {{"ok", true},
          {"daemon",
           {{"pid", getpid()},
            {"epoch", fmt::format("{:#x}", epoch_)},
            {"uptime_s", static_cast<double>(now - started_ns_) / 1e9},
            {"socket", options_.socket_path},
            {"protocol", fmt::format("{}.{}", protocol::kAbiMajor, protocol::kAbiMinor)},
            {"devices", options_.devices.empty() ? json("all") : json(options_.devices)},
            {"mode", mode_ == protocol::SharingMode::mps ? "mps" : "timeslice"},
            {"mps", mps_json()}}},
          {"policy",
           {{"source", policy->source},
            {"generation", policy_.generation()},
            {"rules", policy->rules.size()},
            {"last_reload_error", last_reload_error_}}},
          {"scheduler",
           {{"be_budget_us", micros(params.be_budget_ns)},
            {"idle_budget_us", micros(params.idle_budget_ns)},
            {"holdoff_ms", static_cast<double>(params.holdoff_ns) / 1e6},
            {"copy_chunk_mib", params.copy_chunk_bytes >> 20},
            {"sharing", sharing_name(params.sharing)},
            {"reserve_sms", params.reserve_sms == 0 ? json("auto") : json(params.reserve_sms)}}},
          {"devices", devices},
          {"clients", {{"total", clients_.size()}, {"rt", rt}, {"be", clients_.size() - rt}}},
          {"unmanaged", tracer_ ? tracer_->status() : json(nullptr)},
          {"counters",
           {{"messages", c.messages},
            {"invalid_messages", c.invalid_messages},
            {"ops", c.ops},
            {"samples", c.samples},
            {"decisions", c.decisions},
            {"decisions_queued", ring_drops_},
            {"predictions", c.predictions},
            {"kernels_timed", scheduler_.model().identities()},
            {"connects", c.connects},
            {"disconnects", c.disconnects},
            {"gate_changes", c.mode_changes},
            {"route_changes", c.route_changes},
            {"kills", c.kills}}}};
}

json Server::Impl::ps_json(std::uint64_t now) const {
  json clients = json::array();
  for (const ClientView& v : scheduler_.clients(now)) {
    clients.push_back({{"id", v.id},
                       {"pid", v.identity.pid},
                       {"uid", v.identity.uid},
                       {"exe", v.identity.exe},
                       {"class", protocol::class_name(v.assignment.params.cls)},
                       {"priority", v.assignment.params.priority},
                       {"rule", v.assignment.rule},
                       {"label", v.identity.label},
                       {"overridden", v.overridden},
                       {"queued", v.held_ops},
                       {"inflight_us", micros(v.inflight_ns)},
                       {"gpu_share", v.gpu_share},
                       {"gpu_ms", static_cast<double>(v.completed_ns) / 1e6},
                       {"rt_busy", v.rt_busy},
                       {"rt_rank", v.rt_rank},
                       {"grant_us", micros(v.grant_ns)},
                       {"solo", v.solo},
                       {"kill", v.assignment.params.kill},
                       {"kills", v.kills},
                       {"kill_epoch", v.kill_epoch},
                       {"partitioned", v.partitioned},
                       {"connected_s", static_cast<double>(v.connected_ns) / 1e9},
                       {"messages", v.messages},
                       {"invalid_messages", v.invalid_messages}});
  }
  return {{"ok", true}, {"clients", clients}};
}

json Server::Impl::queue_json(std::uint64_t now, std::size_t limit) const {
  json queue = json::array();
  auto views = scheduler_.queue(now, limit + 1);
  bool truncated = views.size() > limit;
  if (truncated) views.resize(limit);
  for (const QueueView& v : views) {
    queue.push_back({{"client", v.client},
                     {"pid", v.pid},
                     {"exe", v.exe},
                     {"seq", v.seq},
                     {"device", v.device},
                     {"kind", protocol::op_kind_name(v.kind)},
                     {"name", v.name},
                     {"grid", {v.grid[0], v.grid[1], v.grid[2]}},
                     {"block", {v.block[0], v.block[1], v.block[2]}},
                     {"bytes", v.bytes},
                     {"predicted_us", static_cast<double>(v.predicted_ns) / 1000.0},
                     {"waiting_ms", static_cast<double>(v.waiting_ns) / 1e6},
                     {"stream", fmt::format("{:#x}", v.stream)}});
  }
  return {{"ok", true}, {"queue", queue}, {"truncated", truncated}};
}

}  // namespace sluice::sched
