// What the Trainer hands lib/record: the run's facts at the start, its summary at the end, and
// one metrics.csv row per step. Rank 0 keeps the record; other ranks write nothing.
#include <fmt/format.h>
#include <torch/torch.h>

#include "checkpoint/hdf5_file.h"
#include "parallel/device.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"
#include "parallel/stage_layers.h"
#include "train/stop_signal.h"
#include "train/trainer.h"

namespace moe {

namespace {

const std::vector<std::string> kMetricColumns = {"step", "loss", "aux_loss", "z_loss", "lr", "grad_norm",
                                                 "tokens", "tokens_per_s", "step_seconds", "dropped_fraction",
                                                 "skipped", "eval_loss", "comm_seconds", "comm_bytes", "a2a_seconds",
                                                 "a2a_bytes", "bubble", "plain_comm_bytes", "compress_energy",
                                                 "compress_rank"};

}  // namespace

void Trainer::write_start_record(const std::string& resumed_from) {
    if (!par_->is_root()) return;   // one record per run, from rank 0
    RunStart st;
    st.run_id = run_id_;
    st.command_line = command_line_;
    st.config_file = cfg_.source_path;
    st.overrides = cfg_.overrides;
    st.config_yaml = config_to_yaml(cfg_);
    st.config_hash = model_config_hash(cfg_);
    WorldLayout& w = st.world;
    w.size = par_->mesh.world;
    w.pp = cfg_.parallel.pp;
    w.dp = cfg_.parallel.dp;
    w.ep = cfg_.parallel.ep;
    w.schedule = to_string(cfg_.parallel.schedule);
    w.micro_batches = cfg_.train.micro_batches;
    for (int64_t s = 0; s < cfg_.parallel.pp; ++s)
        w.layers_per_stage.push_back(stage_layers(cfg_.model.n_layers, cfg_.parallel.pp, cfg_.parallel.partition, s).count);
    w.ranks_per_host = ranks_on_this_host();
    w.threads_per_rank = at::get_num_threads();
    st.linked_versions = {{"mpi", mpi_library_version()}, {"hdf5", hdf5_library_version()},
                          {"nccl", nccl_library_version()}};
    st.data = data_->describe();
    st.device = describe_device(par_->device);
    st.precision = precision_name(cfg_.train.precision);
    st.parameters = stage_.model->params().total_numel();
    st.checkpoint_dir = checkpoint_dir_;
    st.resumed_from = resumed_from;
    st.resumed_step = resumed_from.empty() ? -1 : first_step_;
    record_ = std::make_unique<RunRecord>(run_dir_);
    record_->write_start(st);
    // A second signal exits at once (no time for YAML): it leaves this record behind instead.
    set_last_words(record_->path(),
                   record_->text_if_ended("killed", fmt::format("a second signal ended the run at once, without saving; "
                                                                "the newest complete checkpoint is in {}",
                                                                checkpoint_dir_),
                                           /*exit_code=*/-1));   // 128 + the signal; unknown in advance
}

void Trainer::open_metrics(const std::string& resumed_from) {
    if (!record_) return;
    metrics_ = std::make_unique<MetricsLog>(run_dir_ + "/metrics.csv", kMetricColumns,
                                            resumed_from.empty() ? -1 : first_step_);
}

void Trainer::finish_record(const std::string& status, const std::string& error, const std::string& stop_reason) {
    if (!record_) return;
    RunSummary s;
    s.steps = optimizer_->step_count() + skipped_steps_;
    s.optimizer_steps = optimizer_->step_count();
    s.skipped_steps = skipped_steps_;
    s.tokens = tokens_seen_;
    if (!async_replicas_.empty()) {   // replicas step apart: the run's tokens are all of theirs
        s.tokens = 0;
        for (const auto& r : async_replicas_) s.tokens += r.tokens;
    }
    s.train_seconds = train_seconds_;
    s.checkpoints_saved = checkpoints_saved_;
    s.checkpoint_stall_seconds = checkpoint_stall_seconds_;
    s.comm_bytes = comm_bytes_total_;
    s.plain_comm_bytes = plain_comm_bytes_total_;
    for (double b : bubble_sum_) s.pipeline_bubble.push_back(b / double(bubble_steps_));
    if (last_step_) s.final_train_loss = last_step_->loss;
    if (last_eval_) {
        s.final_eval_loss = last_eval_->loss;
        s.final_eval_perplexity = last_eval_->perplexity;
        s.final_eval_bits_per_byte = last_eval_->bits_per_byte;
        s.expert_load = last_eval_->expert_load;
    }
    s.entropy_bound = entropy_bound_;
    s.async_replicas = async_replicas_;
    s.model_flops_per_token = model_flops_per_token(cfg_.model, cfg_.train.seq_len);
    // Every rank has a device like rank 0's: the job's peak is world x its peak.
    if (const double peak = peak_bf16_flops(par_->device); peak > 0 && train_seconds_ > 0)
        s.mfu = s.model_flops_per_token * double(s.tokens) / train_seconds_ / (peak * double(par_->mesh.world));
    const int exit_code = status == "completed" ? 0 : status == "interrupted" ? (stop_requested() ? kExitInterrupted : 0) : 1;
    record_->write_end(status, error, stop_reason, s, exit_code);
    clear_last_words();   // the record now says how the run ended
}

void Trainer::log_step(int64_t step, const StepResult& r, double step_seconds, std::optional<double> eval_loss) {
    if (!metrics_) return;   // ranks other than 0
    const double step_tokens = double(cfg_.train.batch_size * cfg_.train.seq_len * sync_->step_group().size());
    std::map<std::string, double> row{{"step", double(step)},
                                      {"loss", r.loss},
                                      {"aux_loss", r.aux_loss},
                                      {"z_loss", r.z_loss},
                                      {"lr", r.lr},
                                      {"grad_norm", r.grad_norm},
                                      {"tokens", double(tokens_seen_)},
                                      {"tokens_per_s", step_tokens / step_seconds},
                                      {"step_seconds", step_seconds},
                                      {"dropped_fraction", r.dropped_fraction},
                                      {"skipped", r.skipped ? 1.0 : 0.0},
                                      {"comm_seconds", r.comm_seconds},
                                      {"comm_bytes", double(r.comm_bytes)},
                                      {"a2a_seconds", r.a2a_seconds},
                                      {"a2a_bytes", double(r.a2a_bytes)},
                                      {"bubble", r.bubble},
                                      {"plain_comm_bytes", double(r.plain_comm_bytes)}};
    if (r.compress_energy >= 0) row["compress_energy"] = r.compress_energy;
    if (r.compress_rank > 0) row["compress_rank"] = r.compress_rank;
    if (eval_loss) row["eval_loss"] = *eval_loss;
    metrics_->append(row);
}

}  // namespace moe
