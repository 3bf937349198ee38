// The Trainer's checkpoints: which one to resume from, loading it on every rank, and saving
// (collectively with more than one rank; asynchronously with one when checkpoint.async).
#include <chrono>

#include "checkpoint/checkpoint_model.h"
#include "common/error.h"
#include "train/trainer.h"

namespace moe {

namespace {
using Clock = std::chrono::steady_clock;
}

CheckpointIdentity Trainer::checkpoint_identity() const {
    CheckpointIdentity identity;
    identity.config_yaml = config_to_yaml(cfg_);
    identity.config_hash = model_config_hash(cfg_);
    identity.model = cfg_.model;
    identity.pp = cfg_.parallel.pp;
    identity.dp = cfg_.parallel.dp;
    identity.ep = cfg_.parallel.ep;
    identity.world_size = par_->mesh.world;
    return identity;
}

std::vector<std::string> Trainer::checkpoint_candidates(CheckpointStore& store) const {
    if (options_.resume == "never") return {};
    if (options_.resume != "auto") return {resolve_checkpoint_dir(options_.resume)};
    std::vector<std::string> notes;
    auto found = store.candidates(&notes);
    for (const auto& why : notes) fmt::print(stderr, "moe-train: checkpoint: {}\n", why);
    if (found.empty() && !store.list_steps().empty())
        throw CheckpointError(fmt::format("{}: no checkpoint verifies (see above); refusing to start over "
                                          "beside them (use --resume never to do so)", store.root()));
    return found;
}

std::string Trainer::resume(CheckpointStore& store) {
    // Rank 0 lists the candidates, newest first (its notes are printed once); every rank tries
    // each in turn and all agree on the first that every rank loads: a checkpoint whose checksums
    // pass but whose tensors or counters do not is skipped, saying why, like a corrupt one.
    std::string joined;
    if (par_->is_root())
        for (const auto& d : checkpoint_candidates(store)) joined += d + "\n";
    joined = broadcast_string(*par_->world, joined, 0);
    std::vector<std::string> candidates;
    for (size_t at = 0, nl; (nl = joined.find('\n', at)) != std::string::npos; at = nl + 1)
        candidates.push_back(joined.substr(at, nl - at));
    if (candidates.empty()) return "";
    if (!sync_->resumable())
        throw ConfigError(fmt::format("async.window_seconds: an asynchronous run with wall-clock windows cannot be "
                                      "resumed (they do not repeat; use async.window_steps), and {} holds checkpoints "
                                      "(its newest: {}, the anchor; moe-eval reads it); use --resume never or another "
                                      "--run-dir to start over ({})",
                                      store.root(), candidates.front(), cfg_.source_path));

    // The shard holding this rank's experts: written by the rank of the first expert group with
    // the same expert shard and stage (rank 0 when there is no expert parallelism).
    const Mesh& m = par_->mesh;
    // With state that differs per rank (compression's error buffers) every rank saved its own.
    const bool own_shard = sync_->state_differs_per_rank();
    const int64_t shard = own_shard ? m.rank : m.expert_rank * m.pp + m.stage;
    std::vector<SyncStateTensor> sync_state;
    for (const auto& t : sync_->state()) sync_state.push_back({t.name, t.value});
    bool sync_state_found = false;
    std::string reasons;   // this rank's, for the error when none loads
    for (const auto& dir : candidates) {
        TrainingState st;
        std::string why;
        try {
            sync_state_found =
                load_checkpoint_with_sync_state(dir, shard, stage_.model->params(), *optimizer_, st, sync_state, sync_->counters());
            if (sync_state_found) sync_->state_loaded();
        } catch (const std::exception& e) {
            why = e.what();
        }
        auto failed = torch::tensor({int64_t(why.empty() ? 0 : 1)});
        par_->world->all_reduce(failed, ReduceOp::max);
        if (failed.item<int64_t>() != 0) {
            if (options_.resume != "auto")   // the checkpoint asked for: no other will do
                throw CheckpointError(why.empty() ? fmt::format("{}: another rank could not load it", dir) : why);
            if (!why.empty()) {
                fmt::print(stderr, "moe-train: {}skipping checkpoint {}: {}\n",
                           m.world > 1 ? fmt::format("rank {}: ", m.rank) : "", dir, why);
                reasons += fmt::format("; {}", why);
            }
            continue;
        }
        const YAML::Node manifest = read_manifest(dir);
        const std::string hash = manifest["config_hash"].as<std::string>("");
        if (hash != model_config_hash(cfg_) && par_->is_root())
            fmt::print(stderr, "moe-train: note: {} was written with model config hash {}, this config has {}; "
                               "loaded (every tensor's name, dtype and shape matched)\n", dir, hash,
                       model_config_hash(cfg_));
        if (!sync_state.empty() && !sync_state_found && par_->is_root())
            fmt::print(stderr, "moe-train: note: {} holds no replica-sync state ({}); it starts afresh\n", dir,
                       sync_state.front().name);
        first_step_ = steps_done_ = last_saved_step_ = st.step;
        tokens_seen_ = st.tokens;
        skipped_steps_ = st.skipped_steps;
        bad_steps_in_a_row_ = st.bad_steps_in_a_row;
        train_seconds_ = st.train_seconds;
        data_->set_position(st.data);
        set_torch_rng_state(st.torch_rng);
        if (par_->is_root()) fmt::print("resumed from {} (step {})\n", dir, st.step);
        return dir;
    }
    throw CheckpointError(fmt::format("{}: no checkpoint loads{}; refusing to start over beside them (use --resume "
                                      "never to do so)", store.root(), reasons.empty() ? " (see the other ranks)" : reasons));
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

void Trainer::add_sync_state(CheckpointSnapshot& snapshot) {
    for (const auto& t : sync_->state()) snapshot.sync_state.push_back({t.name, t.value.clone().contiguous()});
    for (const auto& c : sync_->counters()) snapshot.sync_counters.emplace_back(c.name, *c.value);
}

void Trainer::save_checkpoint(CheckpointStore& store, bool wait) {
    const int64_t steps_done = sync_->checkpoint_step(steps_done_);
    if (steps_done == last_saved_step_) return;
    auto t0 = Clock::now();
    TrainingState st = training_state();
    st.step = steps_done;
    if (par_->world->size() > 1) {
        // Replicas of the same expert shard hold identical tensors: the first expert group writes
        // (rank 0 alone without expert parallelism), every rank takes part in the commit.
        // With state that differs per rank, every rank writes its own shard.
        const bool writer = par_->mesh.replica < par_->mesh.ep || sync_->state_differs_per_rank();
        CheckpointSnapshot snapshot;
        if (writer) snapshot = take_snapshot(stage_.model->params(), *optimizer_, st);
        add_sync_state(snapshot);
        snapshot.state = st;
        store.save_collective(snapshot, *par_->world, writer);
    } else {
        CheckpointSnapshot snapshot = take_snapshot(stage_.model->params(), *optimizer_, st);
        add_sync_state(snapshot);
        if (cfg_.checkpoint.async && !wait) {
            store.save_async(std::move(snapshot));   // waits for the previous save, then copies nothing more
        } else {
            store.wait();
            store.save(snapshot);
        }
    }
    checkpoint_stall_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
    last_saved_step_ = steps_done;
    ++checkpoints_saved_;
}

}  // namespace moe
