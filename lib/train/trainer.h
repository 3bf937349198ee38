// The training loop, read top to bottom like the algorithm:
//   next batch -> forward/backward per micro-batch -> (gradient sync) -> clip -> AdamW -> log
//   -> periodic eval -> (checkpoint).
// A NaN/Inf loss skips the step (no update) and is counted; too many in a row abort the run.
// Every run leaves runs/<run-id>/record.yaml and metrics.csv, also when it fails.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "moe/transformer.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/grad_sync.h"
#include "parallel/parallel_context.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/data.h"
#include "train/evaluate.h"
#include "train/metrics_log.h"
#include "train/pipeline_executor.h"
#include "train/run_record.h"

namespace moe {

struct StepResult {
    double loss = 0;       // cross-entropy of the step's batch (nats/token)
    double aux_loss = 0;   // mean over MoE layers
    double z_loss = 0;
    double grad_norm = 0;  // before clipping
    double lr = 0;
    double comm_seconds = 0;   // gradient averaging
    int64_t comm_bytes = 0;
    double a2a_seconds = 0;    // expert-parallel exchanges (0 without expert parallelism)
    int64_t a2a_bytes = 0;
    double bubble = 0;         // pipeline: idle share of the step, mean over stages (0 without)
    double dropped_fraction = 0;
    bool skipped = false;  // non-finite loss: no update
};

// How a run starts and ends, from the command line (not part of the config: the same config
// is resumed and stopped in different ways).
struct RunOptions {
    std::string run_dir;          // empty: <train.run_dir>/<run id>
    std::string resume = "auto";  // "auto": from LATEST under the checkpoint dir if there is one;
                                  // "never"; or a checkpoint directory (step-N or a checkpoint root)
    int64_t stop_after = 0;       // > 0: stop after this many steps as if signalled (for tests and
                                  // time-boxed jobs); the schedule still spans train.steps
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

    MoeTransformer& model() { return *model_; }
    const std::string& run_dir() const { return run_dir_; }
    const std::string& checkpoint_dir() const { return checkpoint_dir_; }

   private:
    // The checkpoint the options ask for ("" for none); rank 0 only.
    std::string choose_checkpoint(CheckpointStore& store) const;
    // Loads the checkpoint rank 0 chose on every rank; returns its directory or "".
    std::string resume(CheckpointStore& store);
    // A stop signal on any rank stops every rank after the same step.
    bool any_rank_stop_requested() const;
    // The idle share of this step on every stage (pipeline group), averaged; kept per stage for the record.
    double pipeline_bubble(const PipelineStepOutput& out);
    TrainingState training_state() const;
    void save_checkpoint(CheckpointStore& store, int64_t steps_done, bool wait);
    void write_start_record(const std::string& resumed_from);
    void finish_record(const std::string& status, const std::string& error);
    void log_step(int64_t step, const StepResult& r, double step_seconds, std::optional<double> eval_loss);

    Config cfg_;
    std::string command_line_;
    RunOptions options_;
    std::string run_id_;
    std::string run_dir_;
    std::string checkpoint_dir_;
    std::unique_ptr<DataSource> data_;
    std::unique_ptr<MoeTransformer> model_;
    std::unique_ptr<PipelineExecutor> executor_;
    std::unique_ptr<AdamW> optimizer_;
    std::unique_ptr<RunRecord> record_;
    std::unique_ptr<MetricsLog> metrics_;
    std::shared_ptr<ParallelContext> par_;
    std::unique_ptr<GradientSync> grad_sync_;
    std::shared_ptr<AllToAllDispatcher> a2a_;   // set under expert parallelism
    bool all_ranks_evaluate_ = false;            // the forward pass communicates

    int64_t first_step_ = 0;   // 0, or the step a resumed run continues from
    int64_t tokens_seen_ = 0;
    int64_t bad_steps_in_a_row_ = 0;
    int64_t skipped_steps_ = 0;
    double train_seconds_ = 0;
    int64_t checkpoints_saved_ = 0;
    int64_t last_saved_step_ = -1;
    double checkpoint_stall_seconds_ = 0;   // time the loop spent on saves (staging copy only when async)
    std::vector<double> bubble_sum_;        // per stage, over this process's steps
    int64_t bubble_steps_ = 0;
    std::optional<StepResult> last_step_;
    std::optional<EvalResult> last_eval_;
    std::optional<double> entropy_bound_;
};

}  // namespace moe
