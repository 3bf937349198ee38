// runs/<run-id>/record.yaml: what ran and what it measured. Written when the run starts
// (status: running), rewritten at the end with status completed / failed / interrupted and the
// summary. Every write goes to a temporary file that is fsynced and renamed over the record, so a
// reader never sees half a record.
//
// The trainer hands plain values (RunStart, RunSummary); this file alone decides the layout.
//
//   RunRecord rec(run_dir);
//   rec.write_start(start);                    // status: running
//   rec.write_end("completed", "", summary);   // status, end_time, summary
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/iso_time.h"

namespace moe {

// How the world was split, as the record shows it.
struct WorldLayout {
    int64_t size = 1, pp = 1, dp = 1, ep = 1;
    std::string schedule;                   // pipeline schedule (pp > 1 only)
    int64_t micro_batches = 1;              // (pp > 1 only)
    std::vector<int64_t> layers_per_stage;  // (pp > 1 only)
    int64_t ranks_per_host = 1;
    int64_t threads_per_rank = 1;
};

struct RunStart {
    std::string run_id;
    std::string command_line;
    std::string config_file;
    std::vector<std::string> overrides;
    std::string config_yaml;    // the resolved config (config_to_yaml)
    std::string config_hash;
    WorldLayout world;
    // Versions of libraries only their own layer may ask (MPI, HDF5): name -> version.
    std::vector<std::pair<std::string, std::string>> linked_versions;
    std::string data;           // the data source's description
    std::string device;         // "cpu" or "cuda:0 (NVIDIA H200, ...)" (rank 0's)
    std::string precision;      // fp32 | bf16
    int64_t parameters = 0;
    std::string checkpoint_dir;
    std::string resumed_from;   // empty: a fresh start
    int64_t resumed_step = -1;  // the step it resumed from (-1: a fresh start)
};

// Share of routed tokens per expert of one MoE layer (from an evaluation).
struct ExpertLoad {
    int64_t layer = 0;
    std::vector<double> share;   // fraction of routed assignments per expert (sums to 1)
    double dropped_fraction = 0; // assignments dropped by capacity / routed
};

// Time-dilated asynchronous SGD: one model replica's share of the run.
struct AsyncReplicaSummary {
    int64_t replica = 0;
    double slowdown = 1;           // simulate.slowdown's factor (injected heterogeneity)
    int64_t inner_steps = 0;
    int64_t tokens = 0;            // tokens this model replica trained on
    int64_t windows = 0;           // windows it ended (merges it launched)
    int64_t merges = 0;            // merges it applied
    double mean_staleness = 0;     // inner steps taken between a merge's launch and its use
    int64_t max_staleness = 0;
    int64_t discarded_steps = 0;   // inner steps after the last merge's launch (the run ended there)
    double outer_seconds = 0;      // outer steps and rebases
    double wait_seconds = 0;       // time spent waiting for merges (not overlapped)
    int64_t bytes_sent = 0;        // its ranks' contributions to the outer exchanges
    // FNV-1a over the anchor's bytes after every merge, chained (and over its ranks): equal on
    // two replicas exactly when their anchors were bitwise equal after each merge.
    std::string anchor_digest;
};

struct RunSummary {
    int64_t steps = 0;             // steps taken (optimizer steps + skipped ones)
    int64_t optimizer_steps = 0;
    int64_t skipped_steps = 0;
    int64_t tokens = 0;
    double train_seconds = 0;
    int64_t checkpoints_saved = 0;
    double checkpoint_stall_seconds = 0;
    int64_t comm_bytes = 0;         // rank 0's gradient-exchange bytes over this process's steps
    int64_t plain_comm_bytes = 0;   // what plain all-reduces of the same gradients would have sent
    std::vector<double> pipeline_bubble;   // idle share per stage (empty without a pipeline)
    std::optional<double> final_train_loss;
    std::optional<double> final_eval_loss, final_eval_perplexity, final_eval_bits_per_byte;
    std::vector<ExpertLoad> expert_load;
    std::optional<double> entropy_bound;
    std::vector<AsyncReplicaSummary> async_replicas;   // empty unless async.enabled
    double model_flops_per_token = 0;   // model_flops_per_token(): forward + backward
    std::optional<double> mfu;          // model FLOP/s over the devices' peak (where the peak is known)
};

class RunRecord {
   public:
    // `dir` is the run directory (created if missing). Writes nothing until a write_*().
    explicit RunRecord(std::string dir);

    // Status `running`, everything known at the start, host facts, library versions, the SLURM
    // job's facts when there is one, and `attempts`: the attempts an earlier record in the same
    // run directory listed (a rerun, a requeued job), with this one appended.
    void write_start(const RunStart& start);
    // Final status (completed / failed / interrupted), end time, the error or stop reason if
    // any, the summary, and this attempt's end and exit code.
    void write_end(const std::string& status, const std::string& error, const std::string& stop_reason,
                   const RunSummary& summary, int exit_code);

    // The record as it would read had the run ended now with `status` and `error` (for a signal
    // handler to write when there is no time to build it).
    std::string text_if_ended(const std::string& status, const std::string& error, int exit_code) const;

    YAML::Node& root() { return root_; }
    const std::string& dir() const { return dir_; }
    std::string path() const { return dir_ + "/record.yaml"; }
    void write() const;

   private:
    std::string dir_;
    YAML::Node root_;
};

}  // namespace moe
