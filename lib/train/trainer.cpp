#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <thread>

#include "common/error.h"
#include "train/checkpoint_model.h"
#include "train/compute_threads.h"
#include "train/lr_schedule.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/group_stats_dispatcher.h"
#include "parallel/mpi_communicator.h"
#include "parallel/stage_layers.h"
#include "train/progress.h"
#include "train/stop_signal.h"
#include "train/system_info.h"

namespace moe {

namespace {

using Clock = std::chrono::steady_clock;

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

const std::vector<std::string> kMetricColumns = {"step", "loss", "aux_loss", "z_loss", "lr", "grad_norm",
                                                 "tokens", "tokens_per_s", "step_seconds", "dropped_fraction",
                                                 "skipped", "eval_loss", "comm_seconds", "comm_bytes", "a2a_seconds",
                                                 "a2a_bytes", "bubble"};

}  // namespace

Trainer::Trainer(Config cfg, std::string command_line, RunOptions options, std::shared_ptr<ParallelContext> parallel)
    : cfg_(std::move(cfg)),
      command_line_(std::move(command_line)),
      options_(std::move(options)),
      run_dir_(options_.run_dir),
      par_(parallel ? std::move(parallel) : ParallelContext::single(cfg_.model.moe.num_experts)) {
    set_compute_threads(cfg_.train.threads > 0 ? cfg_.train.threads : default_threads());
    const Mesh& mesh = par_->mesh;
    data_ = make_data_source(cfg_.data, cfg_.train.seq_len, cfg_.train.seed, mesh.replica, mesh.dp);
    if (data_->vocab_size() > cfg_.model.vocab_size)
        throw ConfigError(fmt::format("model.vocab_size: {} is smaller than the data's vocabulary {} ({}) ({})",
                                      cfg_.model.vocab_size, data_->vocab_size(), data_->describe(), cfg_.source_path));
    if (mesh.world > 1 && cfg_.checkpoint.async)
        throw ConfigError(fmt::format("checkpoint.async: asynchronous saves with more than one rank are not available "
                                      "yet ({})", cfg_.source_path));
    std::shared_ptr<ExpertDispatcher> dispatcher;
    if (mesh.ep > 1) {
        a2a_ = std::make_shared<AllToAllDispatcher>(*par_->expert, cfg_.model.moe.num_experts);
        dispatcher = a2a_;
    } else {
        dispatcher = std::make_shared<LocalDispatcher>(cfg_.model.moe.num_experts);
    }
    // Global aux-loss scope: router statistics summed over all replicas (the global batch).
    if (cfg_.model.moe.aux_loss_scope == AuxLossScope::global && mesh.dp > 1)
        dispatcher = std::make_shared<GroupStatsDispatcher>(dispatcher, *par_->data);
    // When the forward pass communicates (expert exchanges, global router statistics), every rank
    // takes part in evaluation too; otherwise rank 0 evaluates alone.
    all_ranks_evaluate_ = mesh.ep > 1 || mesh.pp > 1 ||
                          (cfg_.model.moe.aux_loss_scope == AuxLossScope::global && mesh.dp > 1);
    const StageLayers layers = stage_layers(cfg_.model.n_layers, mesh.pp, cfg_.parallel.partition, mesh.stage);
    ModelSlice slice;
    slice.first_layer = layers.first;
    slice.num_layers = layers.count;
    slice.has_embedding = mesh.stage == 0;
    slice.has_head = mesh.stage == mesh.pp - 1;
    model_ = std::make_unique<MoeTransformer>(cfg_.model, dispatcher, cfg_.train.seed, slice);
    // One stage: GPipe's "all forwards first" would only hold every micro-batch's graph at once.
    const ScheduleKind kind = mesh.pp == 1 ? ScheduleKind::one_f_one_b : cfg_.parallel.schedule;
    executor_ = std::make_unique<PipelineExecutor>(*model_, *par_->pipeline,
                                                   make_schedule(kind, int(mesh.pp), int(cfg_.train.micro_batches)));
    optimizer_ = std::make_unique<AdamW>(model_->params(), cfg_.optim);
    grad_sync_ = std::make_unique<GradientSync>(model_->params(), *par_->data, *par_->expert_data, cfg_.parallel.bucket_mb,
                                                cfg_.parallel.overlap_grad_sync);
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

bool Trainer::any_rank_stop_requested() const {
    if (par_->world->size() == 1) return stop_requested();
    auto flag = torch::tensor({int64_t(stop_requested())});
    par_->world->all_reduce(flag, ReduceOp::max);   // all ranks stop after the same step
    return flag.item<int64_t>() != 0;
}

void Trainer::write_start_record(const std::string& resumed_from) {
    if (!par_->is_root()) return;   // one record per run, from rank 0
    record_ = std::make_unique<RunRecord>(run_dir_);
    YAML::Node& r = record_->root();
    r["run_id"] = run_id_;
    r["status"] = "running";
    r["command_line"] = command_line_;
    r["config_file"] = cfg_.source_path;
    r["overrides"] = YAML::Node(YAML::NodeType::Sequence);
    for (const auto& o : cfg_.overrides) r["overrides"].push_back(o);
    r["config"] = YAML::Load(config_to_yaml(cfg_));
    r["config_hash"] = model_config_hash(cfg_);
    YAML::Node world;
    world["size"] = par_->mesh.world;
    world["pp"] = cfg_.parallel.pp;
    world["dp"] = cfg_.parallel.dp;
    world["ep"] = cfg_.parallel.ep;
    if (cfg_.parallel.pp > 1) {
        world["schedule"] = to_string(cfg_.parallel.schedule);
        world["micro_batches"] = cfg_.train.micro_batches;
        YAML::Node layers(YAML::NodeType::Sequence);
        for (int64_t st = 0; st < cfg_.parallel.pp; ++st)
            layers.push_back(stage_layers(cfg_.model.n_layers, cfg_.parallel.pp, cfg_.parallel.partition, st).count);
        world["layers_per_stage"] = layers;
    }
    world["ranks_per_host"] = ranks_on_this_host();
    world["threads_per_rank"] = at::get_num_threads();
    r["world"] = world;
    r["host"] = host_description();
    r["versions"] = library_versions();
    r["data"] = data_->describe();
    r["parameters"] = model_->params().total_numel();
    r["checkpoint_dir"] = checkpoint_dir_;
    if (!resumed_from.empty()) r["resumed_from"] = resumed_from;
    r["start_time"] = iso_time_now();
    r["end_time"] = YAML::Node(YAML::NodeType::Null);
    record_->write();
    metrics_ = std::make_unique<MetricsLog>(run_dir_ + "/metrics.csv", kMetricColumns,
                                            resumed_from.empty() ? -1 : first_step_);
}

void Trainer::finish_record(const std::string& status, const std::string& error) {
    if (!record_) return;
    YAML::Node& r = record_->root();
    r["status"] = status;
    r["end_time"] = iso_time_now();
    if (!error.empty()) r["error"] = error;
    YAML::Node s;
    s["steps"] = optimizer_->step_count() + skipped_steps_;
    s["optimizer_steps"] = optimizer_->step_count();
    s["skipped_steps"] = skipped_steps_;
    s["tokens"] = tokens_seen_;
    s["train_seconds"] = train_seconds_;
    s["tokens_per_s"] = train_seconds_ > 0 ? double(tokens_seen_) / train_seconds_ : 0.0;
    s["checkpoints_saved"] = checkpoints_saved_;
    s["checkpoint_stall_seconds"] = checkpoint_stall_seconds_;
    if (bubble_steps_ > 0) {   // idle share per stage, mean over this process's steps
        YAML::Node bubble(YAML::NodeType::Sequence);
        for (double b : bubble_sum_) bubble.push_back(b / double(bubble_steps_));
        s["pipeline_bubble"] = bubble;
    }
    if (last_step_) s["final_train_loss"] = last_step_->loss;
    if (last_eval_) {
        s["final_eval_loss"] = last_eval_->loss;
        s["final_eval_perplexity"] = last_eval_->perplexity;
        if (last_eval_->bits_per_byte) s["final_eval_bits_per_byte"] = *last_eval_->bits_per_byte;
        YAML::Node load;
        for (const auto& l : last_eval_->expert_load) {
            YAML::Node row;
            row["layer"] = l.layer;
            row["share"] = l.share;
            row["dropped_fraction"] = l.dropped_fraction;
            load.push_back(row);
        }
        s["expert_load"] = load;
    }
    if (entropy_bound_) {
        s["entropy_bound"] = *entropy_bound_;
        if (last_eval_) s["eval_loss_over_bound"] = last_eval_->loss / *entropy_bound_;
    }
    r["summary"] = s;
    record_->write();
}

StepResult Trainer::train_step(int64_t step) {
    StepResult r;
    r.lr = learning_rate(cfg_.optim, step, cfg_.train.steps);
    ParameterStore& params = model_->params();
    params.zero_grads();

    if (a2a_) a2a_->reset_stats();
    TokenBatch batch = data_->next_train_batch(cfg_.train.batch_size);
    const PipelineStepOutput out = executor_->run(batch_inputs(batch), batch_targets(batch), [&] { grad_sync_->arm(); });
    grad_sync_->start_remaining();
    // The step's scalars: the loss lives on the last stage and each stage holds its MoE layers'
    // terms, so they add up over the pipeline; then the mean over the replicas (their batches are
    // equal in size, so the mean of the means is the mean over the global batch). Every rank
    // then agrees on skipping a step.
    auto scalars = torch::tensor({out.loss, out.aux_loss_sum, out.z_loss_sum, double(out.routed), double(out.dropped),
                                  double(out.moe_layers)},
                                 torch::kFloat64);
    if (par_->pipeline->size() > 1) par_->pipeline->all_reduce(scalars);
    if (par_->data->size() > 1) {
        par_->data->all_reduce(scalars);
        scalars.mul_(1.0 / double(par_->data->size()));
    }
    const double moe_layers = scalars[5].item<double>();
    r.loss = scalars[0].item<double>();
    r.aux_loss = moe_layers > 0 ? scalars[1].item<double>() / moe_layers : 0;
    r.z_loss = moe_layers > 0 ? scalars[2].item<double>() / moe_layers : 0;
    const double routed = scalars[3].item<double>(), dropped = scalars[4].item<double>();
    r.bubble = pipeline_bubble(out);
    r.dropped_fraction = routed > 0 ? double(dropped) / double(routed) : 0.0;
    if (a2a_) {   // forward and backward of every MoE layer's exchanges
        r.a2a_seconds = a2a_->stats().seconds;
        r.a2a_bytes = a2a_->stats().bytes;
    }
    tokens_seen_ += cfg_.train.batch_size * cfg_.train.seq_len * par_->mesh.dp;

    torch::NoGradGuard no_grad;
    grad_sync_->average();   // also on a skipped step: its reductions are in flight
    r.comm_seconds = grad_sync_->seconds_last_step();
    r.comm_bytes = grad_sync_->bytes_last_step();
    if (!std::isfinite(r.loss)) {
        r.skipped = true;
        ++skipped_steps_;
        if (++bad_steps_in_a_row_ > cfg_.train.max_bad_steps)
            throw Error(fmt::format("step {}: loss is {} for {} steps in a row (train.max_bad_steps = {}); "
                                    "lower optim.lr or check the data",
                                    step, r.loss, bad_steps_in_a_row_, cfg_.train.max_bad_steps));
        return r;
    }
    bad_steps_in_a_row_ = 0;
    // Global norm over distinct parameters: dense gradients are now equal on every replica;
    // expert gradients differ across the expert group (different experts), so their squares add up there.
    // Stages hold distinct parameters: both sums add up over the pipeline too.
    // Summed in float64 so the norm does not depend on how the parameters are split over stages.
    auto sum_of_squares = [&](ParamGroup g) {
        return params.numel(g) > 0 ? params.grads(g).square().sum(torch::kFloat64).item<double>() : 0.0;
    };
    auto squares = torch::tensor({sum_of_squares(ParamGroup::dense), sum_of_squares(ParamGroup::expert)}, torch::kFloat64);
    auto expert_sq = squares.narrow(0, 1, 1);
    par_->expert->all_reduce(expert_sq);
    if (par_->pipeline->size() > 1) par_->pipeline->all_reduce(squares);
    r.grad_norm = std::sqrt(squares[0].item<double>() + squares[1].item<double>());
    if (cfg_.optim.grad_clip > 0 && r.grad_norm > cfg_.optim.grad_clip) {
        const double scale = cfg_.optim.grad_clip / (r.grad_norm + 1e-6);
        for (auto g : {ParamGroup::dense, ParamGroup::expert}) params.grads(g).mul_(scale);
    }
    optimizer_->step(r.lr);
    return r;
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
    return evaluate(*model_, *data_, cfg_.train.eval_batches, cfg_.train.batch_size,
                    par_->pipeline->size() > 1 ? par_->pipeline.get() : nullptr);
}

void Trainer::log_step(int64_t step, const StepResult& r, double step_seconds, std::optional<double> eval_loss) {
    if (!metrics_) return;   // ranks other than 0
    std::map<std::string, double> row{{"step", double(step)},
                                      {"loss", r.loss},
                                      {"aux_loss", r.aux_loss},
                                      {"z_loss", r.z_loss},
                                      {"lr", r.lr},
                                      {"grad_norm", r.grad_norm},
                                      {"tokens", double(tokens_seen_)},
                                      {"tokens_per_s", double(cfg_.train.batch_size * cfg_.train.seq_len * par_->mesh.dp) / step_seconds},
                                      {"step_seconds", step_seconds},
                                      {"dropped_fraction", r.dropped_fraction},
                                      {"skipped", r.skipped ? 1.0 : 0.0},
                                      {"comm_seconds", r.comm_seconds},
                                      {"comm_bytes", double(r.comm_bytes)},
                                      {"a2a_seconds", r.a2a_seconds},
                                      {"a2a_bytes", double(r.a2a_bytes)},
                                      {"bubble", r.bubble}};
    if (eval_loss) row["eval_loss"] = *eval_loss;
    metrics_->append(row);
}

TrainingState Trainer::training_state() const {
    TrainingState st;
    st.tokens = tokens_seen_;
    st.skipped_steps = skipped_steps_;
    st.bad_steps_in_a_row = bad_steps_in_a_row_;
    st.train_seconds = train_seconds_;
    st.data = data_->position();
    st.torch_rng = torch_rng_state();
    return st;
}

std::string Trainer::choose_checkpoint(CheckpointStore& store) const {
    if (options_.resume == "never") return "";
    std::string dir;
    if (options_.resume == "auto") {
        std::vector<std::string> skipped;
        auto found = store.latest_valid(&skipped);
        for (const auto& why : skipped) fmt::print(stderr, "moe-train: skipping checkpoint: {}\n", why);
        if (!found) {
            if (!skipped.empty())
                throw CheckpointError(fmt::format("{}: no checkpoint verifies (see above); refusing to start over "
                                                  "beside them (use --resume never to do so)", store.root()));
            return "";
        }
        dir = *found;
    } else {
        dir = resolve_checkpoint_dir(options_.resume);
    }
    return dir;
}

std::string Trainer::resume(CheckpointStore& store) {
    // Rank 0 chooses (its reasons for skipping checkpoints are printed once); every rank loads it.
    const std::string dir = broadcast_string(*par_->world, par_->is_root() ? choose_checkpoint(store) : "", 0);
    if (dir.empty()) return "";
    const YAML::Node manifest = read_manifest(dir);
    const std::string hash = manifest["config_hash"].as<std::string>("");
    if (hash != model_config_hash(cfg_) && par_->is_root())
        fmt::print(stderr, "moe-train: note: {} was written with model config hash {}, this config has {}; "
                           "loading it anyway (every tensor's name, dtype and shape is checked)\n", dir, hash,
                   model_config_hash(cfg_));
    TrainingState st;
    // The shard holding this rank's experts: written by the rank of the first expert group with
    // the same expert shard and stage (rank 0 when there is no expert parallelism).
    const Mesh& m = par_->mesh;
    load_checkpoint(dir, m.expert_rank * m.pp + m.stage, model_->params(), optimizer_.get(), &st);
    first_step_ = st.step;
    last_saved_step_ = st.step;
    tokens_seen_ = st.tokens;
    skipped_steps_ = st.skipped_steps;
    bad_steps_in_a_row_ = st.bad_steps_in_a_row;
    train_seconds_ = st.train_seconds;
    data_->set_position(st.data);
    set_torch_rng_state(st.torch_rng);
    if (par_->is_root()) fmt::print("resumed from {} (step {})\n", dir, st.step);
    return dir;
}

void Trainer::save_checkpoint(CheckpointStore& store, int64_t steps_done, bool wait) {
    if (steps_done == last_saved_step_) return;
    if (par_->world->size() > 1) {
        // Replicas of the same expert shard hold identical tensors: the first expert group writes
        // (rank 0 alone without expert parallelism), every rank takes part in the commit.
        const bool writer = par_->mesh.replica < par_->mesh.ep;
        auto t0 = Clock::now();
        TrainingState st = training_state();
        st.step = steps_done;
        CheckpointSnapshot snapshot;
        if (writer) snapshot = take_snapshot(model_->params(), *optimizer_, st);
        snapshot.state = st;
        store.save_collective(snapshot, *par_->world, writer);
        checkpoint_stall_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
        last_saved_step_ = steps_done;
        ++checkpoints_saved_;
        return;
    }
    auto t0 = Clock::now();
    TrainingState st = training_state();
    st.step = steps_done;
    CheckpointSnapshot snapshot = take_snapshot(model_->params(), *optimizer_, st);
    if (cfg_.checkpoint.async && !wait) {
        store.save_async(std::move(snapshot));   // waits for the previous save, then copies nothing more
    } else {
        store.wait();
        store.save(snapshot);
    }
    checkpoint_stall_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
    last_saved_step_ = steps_done;
    ++checkpoints_saved_;
}

int Trainer::run() {
    CheckpointIdentity identity;
    identity.config_yaml = config_to_yaml(cfg_);
    identity.config_hash = model_config_hash(cfg_);
    identity.model = cfg_.model;
    identity.pp = cfg_.parallel.pp;
    identity.dp = cfg_.parallel.dp;
    identity.ep = cfg_.parallel.ep;
    identity.world_size = par_->mesh.world;
    CheckpointStore store(checkpoint_dir_, cfg_.checkpoint.keep, identity, par_->mesh.rank);
    if (par_->is_root()) store.remove_stale_temporaries();
    const std::string resumed_from = resume(store);
    write_start_record(resumed_from);

    Progress progress(cfg_.train.steps, cfg_.train.log_every, first_step_, /*quiet=*/!par_->is_root());
    std::string stop_reason;
    try {
        for (int64_t step = first_step_; step < cfg_.train.steps; ++step) {
            auto t0 = Clock::now();
            StepResult r = train_step(step);
            double dt = std::chrono::duration<double>(Clock::now() - t0).count();
            train_seconds_ += dt;
            last_step_ = r;

            std::optional<double> eval_loss;
            const bool last = step + 1 == cfg_.train.steps;
            const bool evaluates = par_->is_root() || all_ranks_evaluate_;
            if (evaluates && (last || (cfg_.train.eval_every > 0 && (step + 1) % cfg_.train.eval_every == 0))) {
                last_eval_ = evaluate_now();
                eval_loss = last_eval_->loss;
            }
            log_step(step, r, dt, eval_loss);
            progress.update(step + 1, r.loss, double(tokens_seen_) / train_seconds_, eval_loss, r.skipped);

            if (any_rank_stop_requested())
                stop_reason = stop_signal() ? fmt::format("signal {} ({})", stop_signal(), strsignal(stop_signal()))
                                            : "a signal to another rank";
            else if (options_.stop_after > 0 && step + 1 >= options_.stop_after && !last)
                stop_reason = fmt::format("--stop-after {}", options_.stop_after);
            if (!stop_reason.empty()) {
                save_checkpoint(store, step + 1, /*wait=*/true);
                break;
            }
            if (cfg_.checkpoint.every > 0 && (step + 1) % cfg_.checkpoint.every == 0)
                save_checkpoint(store, step + 1, /*wait=*/last);
        }
        if (stop_reason.empty() && cfg_.checkpoint.save_final) save_checkpoint(store, cfg_.train.steps, true);
        store.wait();
        if (!last_eval_ && stop_reason.empty() && (par_->is_root() || all_ranks_evaluate_)) last_eval_ = evaluate_now();   // resumed a finished run
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
        record_->root()["stop_reason"] = stop_reason;
        finish_record("interrupted", "");
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
