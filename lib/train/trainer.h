// The training loop, read top to bottom like the algorithm:
//   next batch -> forward/backward through the pipeline -> replica sync -> clip -> AdamW -> log
//   -> periodic eval -> (checkpoint).
// A NaN/Inf loss skips the step (no update) and is counted; too many in a row abort the run.
// Every run leaves runs/<run-id>/record.yaml and metrics.csv, also when it fails.
//
// trainer.cpp holds the loop and the step; trainer_checkpoint.cpp resume and saves;
// trainer_record.cpp what the record and metrics.csv are handed.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "data/data_source.h"
#include "optim/optimizer.h"
#include "parallel/parallel_context.h"
#include "record/metrics_log.h"
#include "record/run_record.h"
#include "train/evaluate.h"
#include "train/pipeline_executor.h"
#include "train/replica_sync.h"
#include "train/stage_model.h"

namespace moe {

struct StepResult {
    double loss = 0;       // cross-entropy of the step's batch (nats/token)
    double aux_loss = 0;   // mean over MoE layers
    double z_loss = 0;
    double grad_norm = 0;  // before clipping
    double lr = 0;
    double comm_seconds = 0;   // gradient exchange backward did not hide
    int64_t comm_bytes = 0;        // this rank's contribution to the step's gradient exchange
    int64_t plain_comm_bytes = 0;  // what a plain all-reduce of the same gradients would send
    double compress_energy = -1;   // compressed steps: mean captured energy (-1: not measured)
    double compress_rank = 0;      // compressed steps: mean rank of the compressed matrices
    double a2a_seconds = 0;    // expert-parallel exchanges (0 without expert parallelism)
    int64_t a2a_bytes = 0;
    double bubble = 0;         // pipeline: idle share of the step, mean over stages (0 without)
    double dropped_fraction = 0;
    bool skipped = false;  // non-finite loss: no update
};

// How progress is shown: `live` redraws one line on a terminal, `plain` prints a line every
// train.log_every steps; `auto` is live on a terminal unless a launcher (mpirun, srun) started
// the process: Open MPI gives every rank a pty, so redrawn lines would fill batch logs.
enum class ProgressMode { auto_detect, live, plain };

// How a run starts and ends, from the command line (not part of the config: the same config
// is resumed and stopped in different ways).
struct RunOptions {
    std::string run_dir;          // empty: <train.run_dir>/<run id>
    std::string resume = "auto";  // "auto": from LATEST under the checkpoint dir if there is one;
                                  // "never"; or a checkpoint directory (step-N or a checkpoint root)
    int64_t stop_after = 0;       // > 0: stop after this many steps as if signalled (for tests and
                                  // time-boxed jobs); the schedule still spans train.steps
    ProgressMode progress = ProgressMode::auto_detect;
};

// Exit codes of run(): 0 completed (or stopped by --stop-after), 3 interrupted by a signal with a
// checkpoint saved (run the same command again to continue).
inline constexpr int kExitInterrupted = 3;

class Trainer {
   public:
    // Validates, builds model and data (errors here leave nothing in the run directory).
    // `parallel`: this rank's groups (null: one process).
    Trainer(Config cfg, std::string command_line, RunOptions options = {},
            std::shared_ptr<ParallelContext> parallel = nullptr);

    // Runs to the end; returns the process exit code. Finalises the record on failure too.
    int run();

    // One optimisation step on the next batch (exposed for tests).
    StepResult train_step(int64_t step);
    EvalResult evaluate_now();

    MoeTransformer& model() { return *stage_.model; }
    const std::string& run_dir() const { return run_dir_; }
    const std::string& checkpoint_dir() const { return checkpoint_dir_; }

   private:
    // --- trainer.cpp: the step ---
    // The step's loss, aux/z losses and routing counts summed over the pipeline and averaged
    // over the replicas, so every rank agrees on them (and on skipping the step).
    void reduce_step_scalars(const PipelineStepOutput& out, StepResult& r);
    // Global gradient norm over all distinct parameters (before clipping).
    double global_grad_norm();
    // The idle share of this step on every stage (pipeline group), averaged; kept per stage for the record.
    double pipeline_bubble(const PipelineStepOutput& out);
    // The step's exchange figures from the replica sync into `r`.
    void take_sync_stats(StepResult& r) const;
    // simulate.slowdown: this model replica sleeps (f - 1) x its fastest step's compute time so far.
    void simulate_slowdown(double compute_seconds);

    // --- trainer_checkpoint.cpp ---
    CheckpointIdentity checkpoint_identity() const;
    // The checkpoints the options allow, in the order to try them; rank 0 only.
    std::vector<std::string> checkpoint_candidates(CheckpointStore& store) const;
    // Loads the first candidate every rank can load; returns its directory or "".
    std::string resume(CheckpointStore& store);
    // Per-host storage: the steps every host verifies, newest first, as this host's folders;
    // `lost`: this rank's checkpoint folder holds no step at all (an emptied or new volume).
    std::vector<std::string> per_host_candidates(CheckpointStore& store, bool lost);
    // Ranks whose volume was lost take the state of step `step` from a replica in their
    // expert-data group (a broadcast); none there: every rank throws, naming the host and step.
    void recover_lost_ranks(bool lost, int64_t step);
    // Continues from `st` (a loaded or a received checkpoint's state).
    void adopt_state(const TrainingState& st);
    TrainingState training_state() const;
    // The replica-sync strategy's state (copies) into a snapshot.
    void add_sync_state(CheckpointSnapshot& snapshot);
    // Saves the state after steps_done_ steps (once per step; `wait`: not in the background).
    void save_checkpoint(CheckpointStore& store, bool wait);

    // --- trainer_record.cpp ---
    void write_start_record(const std::string& resumed_from);
    void open_metrics(const std::string& resumed_from);
    void finish_record(const std::string& status, const std::string& error, const std::string& stop_reason = "");
    void log_step(int64_t step, const StepResult& r, double step_seconds, std::optional<double> eval_loss);

    Config cfg_;
    std::string command_line_;
    RunOptions options_;
    std::string run_id_;
    std::string run_dir_;
    std::string checkpoint_dir_;
    std::shared_ptr<ParallelContext> par_;
    std::unique_ptr<DataSource> data_;
    StageModel stage_;
    std::unique_ptr<PipelineExecutor> executor_;
    std::unique_ptr<Optimizer> optimizer_;
    std::unique_ptr<ReplicaSync> sync_;
    std::unique_ptr<RunRecord> record_;     // rank 0
    // Checkpoint commits run on duplicates of the world (and, with per-host storage, of this
    // host's ranks), so an asynchronous save's thread never shares a communicator.
    bool per_host_ = false;
    std::string host_;                              // this rank's host (MOE_HOST_ID, else the hostname)
    std::unique_ptr<Communicator> ckpt_world_, ckpt_host_;
    std::unique_ptr<MetricsLog> metrics_;   // rank 0

    int64_t first_step_ = 0;   // 0, or the step a resumed run continues from
    double fastest_compute_seconds_ = std::numeric_limits<double>::infinity();   // simulate.slowdown's unit
    int64_t steps_done_ = 0;   // the one source of a checkpoint's step: steps completed so far
    int64_t tokens_seen_ = 0;
    int64_t bad_steps_in_a_row_ = 0;
    int64_t skipped_steps_ = 0;
    double train_seconds_ = 0;
    int64_t comm_bytes_total_ = 0, plain_comm_bytes_total_ = 0;   // this process's, since it started
    int64_t checkpoints_saved_ = 0;
    int64_t last_saved_step_ = -1;
    double checkpoint_stall_seconds_ = 0;   // time the loop spent on saves (staging copy only when async)
    std::vector<double> bubble_sum_;        // per stage, over this process's steps
    int64_t bubble_steps_ = 0;
    std::optional<StepResult> last_step_;
    std::optional<EvalResult> last_eval_;
    std::optional<double> entropy_bound_;
    std::vector<AsyncReplicaSummary> async_replicas_;   // time-dilated SGD, after the loop
};

}  // namespace moe
