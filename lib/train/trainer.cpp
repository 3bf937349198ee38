#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/error.h"
#include "common/fnv1a.h"
#include "config/config.h"
#include "optim/lr_schedule.h"
#include "parallel/mpi_communicator.h"
#include "record/progress.h"
#include "record/system_info.h"
#include "train/compute_threads.h"
#include "train/stop_signal.h"

namespace moe {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string make_run_id(const Config& cfg) {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
    return fmt::format("{}-{}-{}", buf, model_config_hash(cfg).substr(0, 6), ::getpid() % 10000);
}

// Cores on this host shared by the ranks on this host, so `mpirun -np 2` on 2 cores does not
// oversubscribe (the launcher tells each rank how many ranks share its host).
int64_t default_threads() {
    const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
    return std::max<int64_t>(1, cores / ranks_on_this_host());
}

bool live_progress(ProgressMode mode) {
    if (mode != ProgressMode::auto_detect) return mode == ProgressMode::live;
    return ::isatty(STDOUT_FILENO) == 1 && !launched_by_mpi();
}

}  // namespace

Trainer::Trainer(Config cfg, std::string command_line, RunOptions options, std::shared_ptr<ParallelContext> parallel)
    : cfg_(std::move(cfg)),
      command_line_(std::move(command_line)),
      options_(std::move(options)),
      run_dir_(options_.run_dir),
      par_(parallel ? std::move(parallel)
                    : ParallelContext::single(cfg_.model.moe.num_experts,
                                              select_device(cfg_.train.device,
                                                            fmt::format("train.device ({})", cfg_.source_path)))) {
    set_compute_threads(cfg_.train.threads > 0 ? cfg_.train.threads : default_threads());
    keep_freed_memory();
    const Mesh& mesh = par_->mesh;
    data_ = make_data_source(cfg_.data, cfg_.train.seq_len, cfg_.train.seed, mesh.replica, mesh.dp);
    if (data_->vocab_size() > cfg_.model.vocab_size)
        throw ConfigError(fmt::format("model.vocab_size: {} is smaller than the data's vocabulary {} ({}) ({})",
                                      cfg_.model.vocab_size, data_->vocab_size(), data_->describe(), cfg_.source_path));
    if (mesh.world > 1 && cfg_.checkpoint.async && !mpi_thread_multiple())
        throw ConfigError(fmt::format("checkpoint.async: asynchronous saves with more than one rank commit from a thread "
                                      "of their own, and this MPI library does not provide MPI_THREAD_MULTIPLE ({})",
                                      cfg_.source_path));
    per_host_ = cfg_.checkpoint.storage == CheckpointStorage::per_host ||
                (cfg_.checkpoint.storage == CheckpointStorage::auto_detect && std::getenv("FLY_APP_NAME"));
    const char* host_id = std::getenv("MOE_HOST_ID");   // simulated hosts on one machine (tests)
    host_ = host_id && *host_id ? host_id : host_name();
    if (mesh.world > 1) {
        ckpt_world_ = par_->world->split(0, int(mesh.rank), "checkpoint");
        if (per_host_) {   // ranks with the same host name: the first such rank's index is the color
            const uint64_t h = fnv1a(host_);
            const torch::Tensor hashes = ckpt_world_->all_gather(torch::tensor({int64_t(h >> 1)}, torch::kInt64));
            int color = 0;
            while (hashes[color].item<int64_t>() != int64_t(h >> 1)) ++color;
            ckpt_host_ = ckpt_world_->split(color, int(mesh.rank), "checkpoint-host");
        }
    }
    stage_ = build_stage_model(cfg_, *par_);
    // One stage: GPipe's "all forwards first" would only hold every micro-batch's graph at once.
    const ScheduleKind kind = mesh.pp == 1 ? ScheduleKind::one_f_one_b : cfg_.parallel.schedule;
    executor_ = std::make_unique<PipelineExecutor>(*stage_.model, *par_->pipeline,
                                                   make_schedule(kind, int(mesh.pp), int(cfg_.train.micro_batches)));
    optimizer_ = std::make_unique<Optimizer>(stage_.model->params(), cfg_.optim);
    sync_ = make_replica_sync(cfg_, stage_.model->params(), *par_);
    entropy_bound_ = data_->entropy_bound(cfg_.train.eval_batches, cfg_.train.batch_size);

    if (run_dir_.empty()) {
        run_id_ = cfg_.train.run_id.empty() ? make_run_id(cfg_) : cfg_.train.run_id;
        run_dir_ = cfg_.train.run_dir + "/" + run_id_;
    } else {
        run_id_ = std::filesystem::path(run_dir_).lexically_normal().filename().string();
        if (run_id_.empty()) run_id_ = std::filesystem::path(run_dir_).lexically_normal().parent_path().filename().string();
    }
    checkpoint_dir_ = default_checkpoint_dir(cfg_.checkpoint.dir, run_dir_, run_id_);
}

StepResult Trainer::train_step(int64_t step) {
    StepResult r;
    r.lr = learning_rate(cfg_.optim, sync_->schedule_step(step), cfg_.train.steps);
    ParameterStore& params = stage_.model->params();
    params.zero_grads();
    if (stage_.a2a) stage_.a2a->reset_stats();

    // Forward and backward of every micro-batch through this rank's stage.
    TokenBatch batch = data_->next_train_batch(cfg_.train.batch_size);
    const PipelineStepOutput out =
        executor_->run(batch_inputs(batch, par_->device), batch_targets(batch, par_->device),
                       [&] { sync_->before_last_backward(); });
    sync_->after_backward();
    reduce_step_scalars(out, r);
    r.bubble = pipeline_bubble(out);
    if (stage_.a2a) {   // forward and backward of every MoE layer's exchanges
        r.a2a_seconds = stage_.a2a->stats().seconds;
        r.a2a_bytes = stage_.a2a->stats().bytes;
    }
    tokens_seen_ += cfg_.train.batch_size * cfg_.train.seq_len * sync_->step_group().size();

    // Replica sync, also on a skipped step: its exchanges are in flight on every rank.
    torch::NoGradGuard no_grad;
    const bool skip = !std::isfinite(r.loss);   // every rank agrees: the loss was reduced
    sync_->finish_gradients(step, skip);
    take_sync_stats(r);
    if (skip) {
        r.skipped = true;
        ++skipped_steps_;
        if (++bad_steps_in_a_row_ > cfg_.train.max_bad_steps)
            throw Error(fmt::format("step {}: loss is {} for {} steps in a row (train.max_bad_steps = {}); "
                                    "lower optim.lr or check the data",
                                    step, r.loss, bad_steps_in_a_row_, cfg_.train.max_bad_steps));
        return r;
    }
    bad_steps_in_a_row_ = 0;

    // Clip and step.
    r.grad_norm = global_grad_norm();
    if (cfg_.optim.grad_clip > 0 && r.grad_norm > cfg_.optim.grad_clip) {
        const double scale = cfg_.optim.grad_clip / (r.grad_norm + 1e-6);
        for (auto g : {ParamGroup::dense, ParamGroup::expert}) params.grads(g).mul_(scale);
    }
    optimizer_->step(r.lr);
    sync_->after_optimizer_step(step);
    return r;
}

void Trainer::take_sync_stats(StepResult& r) const {
    const SyncStats sync = sync_->last_step();
    r.comm_seconds = sync.seconds;
    r.comm_bytes = sync.bytes;
    r.plain_comm_bytes = sync.plain_bytes;
    r.compress_energy = sync.energy;
    r.compress_rank = sync.mean_rank;
}

// The sleep scales the replica's fastest compute time so far, not this step's: on a shared test
// machine a step slowed by a neighbour would otherwise be slowed f times over, and the injected
// factor would drift with the machine's noise (a 2x slowdown measured 2.5x-4x under load).
void Trainer::simulate_slowdown(double compute_seconds) {
    if (cfg_.simulate.slowdown.empty() || compute_seconds <= 0) return;
    const double f = cfg_.simulate.slowdown.at(size_t(par_->mesh.replica / par_->mesh.ep));
    fastest_compute_seconds_ = std::min(fastest_compute_seconds_, compute_seconds);
    if (f > 1) std::this_thread::sleep_for(std::chrono::duration<double>((f - 1) * fastest_compute_seconds_));
}

void Trainer::reduce_step_scalars(const PipelineStepOutput& out, StepResult& r) {
    // The loss lives on the last stage and each stage holds its MoE layers' terms, so they add up
    // over the pipeline; then the mean over the replicas that step together (their batches are
    // equal in size, so the mean of the means is the mean over their batch).
    auto scalars = torch::tensor({out.loss, out.aux_loss_sum, out.z_loss_sum, double(out.routed), double(out.dropped),
                                  double(out.moe_layers)},
                                 torch::kFloat64);
    if (par_->pipeline->size() > 1) par_->pipeline->all_reduce(scalars);
    if (Communicator& group = sync_->step_group(); group.size() > 1) {
        group.all_reduce(scalars);
        scalars.mul_(1.0 / double(group.size()));
    }
    const double moe_layers = scalars[5].item<double>();
    r.loss = scalars[0].item<double>();
    r.aux_loss = moe_layers > 0 ? scalars[1].item<double>() / moe_layers : 0;
    r.z_loss = moe_layers > 0 ? scalars[2].item<double>() / moe_layers : 0;
    const double routed = scalars[3].item<double>(), dropped = scalars[4].item<double>();
    r.dropped_fraction = routed > 0 ? dropped / routed : 0.0;
}

double Trainer::global_grad_norm() {
    // Dense gradients are now equal on every replica; expert gradients differ across the expert
    // group (different experts), so their squares add up there. Stages hold distinct parameters:
    // both sums add up over the pipeline too. Summed in float64 so the norm does not depend on
    // how the parameters are split over stages.
    ParameterStore& params = stage_.model->params();
    auto sum_of_squares = [&](ParamGroup g) {
        return params.numel(g) > 0 ? params.grads(g).square().sum(torch::kFloat64).item<double>() : 0.0;
    };
    auto squares = torch::tensor({sum_of_squares(ParamGroup::dense), sum_of_squares(ParamGroup::expert)}, torch::kFloat64);
    auto expert_sq = squares.narrow(0, 1, 1);
    par_->expert->all_reduce(expert_sq);
    if (par_->pipeline->size() > 1) par_->pipeline->all_reduce(squares);
    return std::sqrt(squares[0].item<double>() + squares[1].item<double>());
}

double Trainer::pipeline_bubble(const PipelineStepOutput& out) {
    const int P = par_->pipeline->size();
    if (P == 1) return 0;
    auto shares = torch::zeros({P}, torch::kFloat64);
    shares[par_->pipeline->rank()] = out.seconds > 0 ? out.idle_seconds / out.seconds : 0.0;
    par_->pipeline->all_reduce(shares);
    bubble_sum_.resize(size_t(P), 0.0);
    for (int s = 0; s < P; ++s) bubble_sum_[size_t(s)] += shares[s].item<double>();
    ++bubble_steps_;
    return shares.mean().item<double>();
}

EvalResult Trainer::evaluate_now() {
    return evaluate(*stage_.model, *data_, cfg_.train.eval_batches, cfg_.train.batch_size,
                    par_->pipeline->size() > 1 ? par_->pipeline.get() : nullptr);
}

int Trainer::run() {
    CheckpointStore store(checkpoint_dir_, cfg_.checkpoint.keep, checkpoint_identity(), par_->mesh.rank);
    // Whoever commits a folder cleans it: rank 0, or with per-host storage rank 0 of each host.
    if (par_->is_root() || (ckpt_host_ && ckpt_host_->rank() == 0)) store.remove_stale_temporaries();
    std::string resumed_from;
    try {
        resumed_from = resume(store);
    } catch (const std::exception& e) {
        // A run directory that holds an earlier attempt's record gets the truth about this one;
        // a fresh one stays empty (bad input writes nothing).
        if (std::filesystem::exists(run_dir_ + "/record.yaml")) {
            write_start_record("");
            finish_record("failed", e.what());
        }
        throw;
    }
    // A checkpoint is never relabelled: one already past train.steps is left as it is. (An
    // asynchronous run counts its budget in merged tokens: its replicas may pass train.steps.)
    if (first_step_ > cfg_.train.steps && !cfg_.async.enabled)
        throw ConfigError(fmt::format("train.steps: {}, but {} is already at step {}; nothing was changed (raise "
                                      "train.steps to continue it, or --resume never to start over) ({})",
                                      cfg_.train.steps, resumed_from, first_step_, cfg_.source_path));
    write_start_record(resumed_from);

    Progress progress(cfg_.train.steps, cfg_.train.log_every, first_step_, /*quiet=*/!par_->is_root(),
                      live_progress(options_.progress));
    const bool evaluates = par_->is_root() || stage_.all_ranks_evaluate;
    std::string stop_reason;
    try {
        open_metrics(resumed_from);
        bool finished = sync_->finished_at(first_step_);
        for (int64_t step = first_step_; !finished; ++step) {
            auto t0 = Clock::now();
            StepResult r = train_step(step);
            simulate_slowdown(seconds_since(t0) - r.comm_seconds);
            steps_done_ = step + 1;
            const bool stop_after = options_.stop_after > 0 && steps_done_ >= options_.stop_after;
            const StepOutcome next = sync_->end_step(steps_done_, stop_requested(), stop_after);
            take_sync_stats(r);   // end_step may have exchanged more (a window's merge)
            comm_bytes_total_ += r.comm_bytes;
            plain_comm_bytes_total_ += r.plain_comm_bytes;
            finished = next.finished;
            const double dt = seconds_since(t0);
            train_seconds_ += dt;
            last_step_ = r;

            std::optional<double> eval_loss;
            if (evaluates && (finished || (cfg_.train.eval_every > 0 && (step + 1) % cfg_.train.eval_every == 0))) {
                last_eval_ = evaluate_now();
                eval_loss = last_eval_->loss;
            }
            log_step(step, r, dt, eval_loss);
            progress.update(step + 1, r.loss, double(tokens_seen_) / train_seconds_, eval_loss, r.skipped);

            if (next.stop)
                stop_reason = stop_signal()  ? fmt::format("signal {} ({})", stop_signal(), strsignal(stop_signal()))
                              : stop_after ? fmt::format("--stop-after {}", options_.stop_after)
                                           : "a signal to another rank";
            if (!stop_reason.empty()) {
                save_checkpoint(store, /*wait=*/true);
                break;
            }
            if (next.save) save_checkpoint(store, /*wait=*/finished);
        }
        if (stop_reason.empty() && cfg_.checkpoint.save_final) save_checkpoint(store, true);
        store.wait();
        async_replicas_ = sync_->replica_summaries();
        if (!last_eval_ && stop_reason.empty() && evaluates) last_eval_ = evaluate_now();   // resumed a finished run
        progress.finish();
    } catch (const std::exception& e) {
        progress.finish();
        try {
            store.wait();
        } catch (const std::exception& save_error) {
            fmt::print(stderr, "moe-train: {}\n", save_error.what());
        }
        finish_record("failed", e.what());
        throw;
    }
    if (!par_->is_root()) return !stop_reason.empty() && stop_requested() ? kExitInterrupted : 0;
    if (!stop_reason.empty()) {
        finish_record("interrupted", "", stop_reason);
        fmt::print("stopped by {} after step {}; checkpoint saved in {}\n", stop_reason, last_saved_step_,
                   checkpoint_dir_);
        fmt::print("run record: {}/record.yaml\n", run_dir_);
        return stop_requested() ? kExitInterrupted : 0;
    }
    finish_record("completed", "");
    if (last_eval_) {
        fmt::print("final eval loss {:.4f} (perplexity {:.3f})", last_eval_->loss, last_eval_->perplexity);
        if (entropy_bound_) fmt::print(", entropy bound {:.4f}, ratio {:.3f}", *entropy_bound_, last_eval_->loss / *entropy_bound_);
        fmt::print("\nexpert load (share of routed tokens per expert):\n{}", format_expert_load(last_eval_->expert_load));
    }
    fmt::print("run record: {}/record.yaml\n", run_dir_);
    return 0;
}

}  // namespace moe
