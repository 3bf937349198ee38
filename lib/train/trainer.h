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
#include "train/adamw.h"
#include "train/config.h"
#include "train/data.h"
#include "train/evaluate.h"
#include "train/metrics_log.h"
#include "train/run_record.h"

namespace moe {

struct StepResult {
    double loss = 0;       // cross-entropy of the step's batch (nats/token)
    double aux_loss = 0;   // mean over MoE layers
    double z_loss = 0;
    double grad_norm = 0;  // before clipping
    double lr = 0;
    double dropped_fraction = 0;
    bool skipped = false;  // non-finite loss: no update
};

class Trainer {
   public:
    // Validates, builds model and data (errors here leave nothing in the run directory).
    // `run_dir` empty: <train.run_dir>/<run id>.
    Trainer(Config cfg, std::string command_line, std::string run_dir = "");

    // Runs to the end; returns the process exit code. Finalises the record on failure too.
    int run();

    // One optimisation step on the next batch (exposed for tests).
    StepResult train_step(int64_t step);
    EvalResult evaluate_now();

    MoeTransformer& model() { return *model_; }
    const std::string& run_dir() const { return run_dir_; }

   private:
    void write_start_record();
    void finish_record(const std::string& status, const std::string& error);
    void log_step(int64_t step, const StepResult& r, double step_seconds, std::optional<double> eval_loss);

    Config cfg_;
    std::string command_line_;
    std::string run_id_;
    std::string run_dir_;
    std::unique_ptr<DataSource> data_;
    std::unique_ptr<MoeTransformer> model_;
    std::unique_ptr<AdamW> optimizer_;
    std::unique_ptr<RunRecord> record_;
    std::unique_ptr<MetricsLog> metrics_;

    int64_t tokens_seen_ = 0;
    int64_t bad_steps_in_a_row_ = 0;
    int64_t skipped_steps_ = 0;
    double train_seconds_ = 0;
    std::optional<StepResult> last_step_;
    std::optional<EvalResult> last_eval_;
    std::optional<double> entropy_bound_;
};

}  // namespace moe
