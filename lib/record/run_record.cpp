#include "record/run_record.h"

#include <cstdlib>
#include <filesystem>

#include "common/error.h"
#include "common/file_io.h"
#include "record/system_info.h"

namespace moe {

namespace {

YAML::Node world_node(const WorldLayout& w) {
    YAML::Node world;
    world["size"] = w.size;
    world["pp"] = w.pp;
    world["dp"] = w.dp;
    world["ep"] = w.ep;
    if (w.pp > 1) {
        world["schedule"] = w.schedule;
        world["micro_batches"] = w.micro_batches;
        YAML::Node layers(YAML::NodeType::Sequence);
        for (int64_t n : w.layers_per_stage) layers.push_back(n);
        world["layers_per_stage"] = layers;
    }
    world["ranks_per_host"] = w.ranks_per_host;
    world["threads_per_rank"] = w.threads_per_rank;
    return world;
}

YAML::Node summary_node(const RunSummary& s) {
    YAML::Node n;
    n["steps"] = s.steps;
    n["optimizer_steps"] = s.optimizer_steps;
    n["skipped_steps"] = s.skipped_steps;
    n["tokens"] = s.tokens;
    n["train_seconds"] = s.train_seconds;
    n["tokens_per_s"] = s.train_seconds > 0 ? double(s.tokens) / s.train_seconds : 0.0;
    if (s.model_flops_per_token > 0) n["model_flops_per_token"] = s.model_flops_per_token;
    if (s.mfu) n["mfu"] = *s.mfu;
    n["checkpoints_saved"] = s.checkpoints_saved;
    n["checkpoint_stall_seconds"] = s.checkpoint_stall_seconds;
    n["comm_bytes"] = s.comm_bytes;
    n["plain_comm_bytes"] = s.plain_comm_bytes;
    if (s.comm_bytes > 0) n["comm_bytes_over_plain"] = double(s.comm_bytes) / double(s.plain_comm_bytes);
    if (!s.pipeline_bubble.empty()) {
        YAML::Node bubble(YAML::NodeType::Sequence);
        for (double b : s.pipeline_bubble) bubble.push_back(b);
        n["pipeline_bubble"] = bubble;
    }
    if (s.final_train_loss) n["final_train_loss"] = *s.final_train_loss;
    if (s.final_eval_loss) {
        n["final_eval_loss"] = *s.final_eval_loss;
        if (s.final_eval_perplexity) n["final_eval_perplexity"] = *s.final_eval_perplexity;
        if (s.final_eval_bits_per_byte) n["final_eval_bits_per_byte"] = *s.final_eval_bits_per_byte;
        YAML::Node load;
        for (const auto& l : s.expert_load) {
            YAML::Node row;
            row["layer"] = l.layer;
            row["share"] = l.share;
            row["dropped_fraction"] = l.dropped_fraction;
            load.push_back(row);
        }
        n["expert_load"] = load;
    }
    if (s.entropy_bound) {
        n["entropy_bound"] = *s.entropy_bound;
        if (s.final_eval_loss) n["eval_loss_over_bound"] = *s.final_eval_loss / *s.entropy_bound;
    }
    if (!s.async_replicas.empty()) {
        YAML::Node replicas(YAML::NodeType::Sequence);
        for (const auto& r : s.async_replicas) {
            YAML::Node row;
            row["replica"] = r.replica;
            row["simulated_slowdown"] = r.slowdown;
            row["inner_steps"] = r.inner_steps;
            row["tokens"] = r.tokens;
            row["windows"] = r.windows;
            row["merges"] = r.merges;
            row["mean_staleness"] = r.mean_staleness;
            row["max_staleness"] = r.max_staleness;
            row["discarded_steps"] = r.discarded_steps;
            row["outer_seconds"] = r.outer_seconds;
            row["wait_seconds"] = r.wait_seconds;
            row["bytes_sent"] = r.bytes_sent;
            row["anchor_digest"] = r.anchor_digest;
            replicas.push_back(row);
        }
        n["async_replicas"] = replicas;
    }
    return n;
}

// The attempts an earlier record in `dir` lists (it is read as untrusted: too big, unreadable or
// malformed means none, with a note); a record from before attempts were kept counts as one.
YAML::Node earlier_attempts(const std::string& path) {
    YAML::Node none(YAML::NodeType::Sequence);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) return none;
    if (std::filesystem::file_size(path, ec) > (16u << 20)) {
        fmt::print(stderr, "moe-train: {}: over 16 MiB; its attempts are not carried over\n", path);
        return none;
    }
    try {
        const YAML::Node old = YAML::LoadFile(path);
        if (old["attempts"] && old["attempts"].IsSequence()) return YAML::Clone(old["attempts"]);
        YAML::Node first;
        first["start_time"] = old["start_time"].as<std::string>("");
        first["end_time"] = old["end_time"].as<std::string>("");
        first["status"] = old["status"].as<std::string>("");
        none.push_back(first);
    } catch (const std::exception& e) {
        fmt::print(stderr, "moe-train: {}: unreadable ({}); its attempts are not carried over\n", path, e.what());
    }
    return none;
}

// SLURM's facts about the job, when this process runs in one.
YAML::Node slurm_facts() {
    YAML::Node n;
    const std::pair<const char*, const char*> vars[] = {{"job_id", "SLURM_JOB_ID"},
                                                        {"job_name", "SLURM_JOB_NAME"},
                                                        {"restart_count", "SLURM_RESTART_COUNT"},
                                                        {"node_list", "SLURM_JOB_NODELIST"},
                                                        {"ntasks", "SLURM_NTASKS"},
                                                        {"cpus_per_task", "SLURM_CPUS_PER_TASK"}};
    for (const auto& [key, var] : vars)
        if (const char* v = std::getenv(var)) n[key] = std::string(v);
    if (n["job_id"] && !n["restart_count"]) n["restart_count"] = "0";
    return n;
}

void end_attempt(YAML::Node& root, const std::string& status, int exit_code) {
    YAML::Node attempts = root["attempts"];
    if (!attempts.IsSequence() || attempts.size() == 0) return;
    YAML::Node last = attempts[attempts.size() - 1];
    last["end_time"] = iso_time_now();
    last["status"] = status;
    last["exit_code"] = exit_code;
}

}  // namespace

RunRecord::RunRecord(std::string dir) : dir_(std::move(dir)) {}

void RunRecord::write_start(const RunStart& st) {
    YAML::Node attempts = earlier_attempts(path());
    YAML::Node& r = root_;
    r["run_id"] = st.run_id;
    r["status"] = "running";
    r["command_line"] = st.command_line;
    r["config_file"] = st.config_file;
    r["overrides"] = YAML::Node(YAML::NodeType::Sequence);
    for (const auto& o : st.overrides) r["overrides"].push_back(o);
    r["config"] = YAML::Load(st.config_yaml);
    r["config_hash"] = st.config_hash;
    r["world"] = world_node(st.world);
    r["host"] = host_description();
    r["versions"] = library_versions(st.linked_versions);
    r["data"] = st.data;
    r["device"] = st.device;
    r["precision"] = st.precision;
    r["parameters"] = st.parameters;
    r["checkpoint_dir"] = st.checkpoint_dir;
    if (!st.resumed_from.empty()) r["resumed_from"] = st.resumed_from;
    r["start_time"] = iso_time_now();
    r["end_time"] = YAML::Node(YAML::NodeType::Null);
    const YAML::Node slurm = slurm_facts();
    if (slurm.size() > 0) r["slurm"] = slurm;
    YAML::Node attempt;
    // Values, not shared nodes (the emitter would write YAML anchors and aliases).
    attempt["start_time"] = r["start_time"].as<std::string>();
    attempt["resumed_from_step"] = st.resumed_step;
    if (slurm["restart_count"]) attempt["slurm_restart_count"] = slurm["restart_count"].as<std::string>();
    attempt["status"] = "running";
    attempts.push_back(attempt);
    r["attempts"] = attempts;
    write();
}

void RunRecord::write_end(const std::string& status, const std::string& error, const std::string& stop_reason,
                          const RunSummary& summary, int exit_code) {
    root_["status"] = status;
    end_attempt(root_, status, exit_code);
    root_["end_time"] = iso_time_now();
    if (!error.empty()) root_["error"] = error;
    if (!stop_reason.empty()) root_["stop_reason"] = stop_reason;
    root_["summary"] = summary_node(summary);
    write();
}

std::string RunRecord::text_if_ended(const std::string& status, const std::string& error, int exit_code) const {
    YAML::Node copy = YAML::Clone(root_);
    copy["status"] = status;
    copy["error"] = error;
    end_attempt(copy, status, exit_code);
    YAML::Emitter out;
    out << copy;
    return std::string(out.c_str()) + "\n";
}

void RunRecord::write() const {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) throw Error(fmt::format("{}: cannot create run directory: {}", dir_, ec.message()));
    YAML::Emitter out;
    out << root_;
    write_file_atomically(path(), std::string(out.c_str()) + "\n");
}

}  // namespace moe
