// The Trainer's checkpoints: which one to resume from, loading it on every rank (or, for a rank
// whose per-host folder was lost, receiving it from a replica), and saving (collectively with more
// than one rank; in the background when checkpoint.async).
#include <chrono>
#include <cstring>
#include <map>

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
    if (per_host_) identity.host = host_;
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
    // Rank 0 lists the candidates, newest first (its notes are printed once); with per-host
    // storage every rank lists its own folder's and they agree on the steps all hosts hold. Every
    // rank tries each in turn and all agree on the first that every rank loads: a checkpoint whose
    // checksums pass but whose tensors or counters do not is skipped, saying why, like a corrupt one.
    std::vector<std::string> candidates;
    // Per-host storage: each rank's own folder; a rank whose folder holds no step at all lost it.
    const bool lost = per_host_ && options_.resume == "auto" && store.list_steps().empty();
    if (per_host_ && options_.resume == "auto" && par_->mesh.world > 1) {
        candidates = per_host_candidates(store, lost);
    } else {
        std::string joined;
        if (par_->is_root())
            for (const auto& d : checkpoint_candidates(store)) joined += d + "\n";
        joined = broadcast_string(*par_->world, joined, 0);
        for (size_t at = 0, nl; (nl = joined.find('\n', at)) != std::string::npos; at = nl + 1)
            candidates.push_back(joined.substr(at, nl - at));
    }
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
    const bool own_shard = per_host_ || sync_->state_differs_per_rank();
    const int64_t shard = own_shard ? m.rank : m.expert_rank * m.pp + m.stage;
    std::vector<SyncStateTensor> sync_state;
    for (const auto& t : sync_->state()) sync_state.push_back({t.name, t.value});
    bool sync_state_found = false;
    std::string reasons;   // this rank's, for the error when none loads
    for (const auto& dir : candidates) {
        TrainingState st;
        std::string why;
        try {
            if (!lost) {   // (a rank that lost its folder takes the state from a replica below)
                sync_state_found = load_checkpoint_with_sync_state(dir, shard, stage_.model->params(), *optimizer_, st,
                                                                   sync_state, sync_->counters());
                if (sync_state_found) sync_->state_loaded();
            }
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
        if (!lost) adopt_state(st);
        if (per_host_) recover_lost_ranks(lost, lost ? -1 : st.step);
        if (lost) {
            fmt::print("rank {} (host {}): its checkpoint folder {} was empty; took step {} from a replica\n", m.rank,
                       host_, store.root(), first_step_);
            return dir;
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
        if (par_->is_root()) fmt::print("resumed from {} (step {})\n", dir, st.step);
        return dir;
    }
    throw CheckpointError(fmt::format("{}: no checkpoint loads{}; refusing to start over beside them (use --resume "
                                      "never to do so)", store.root(), reasons.empty() ? " (see the other ranks)" : reasons));
}

void Trainer::adopt_state(const TrainingState& st) {
    first_step_ = steps_done_ = last_saved_step_ = st.step;
    tokens_seen_ = st.tokens;
    skipped_steps_ = st.skipped_steps;
    bad_steps_in_a_row_ = st.bad_steps_in_a_row;
    train_seconds_ = st.train_seconds;
    data_->set_position(st.data);
    set_torch_rng_state(st.torch_rng);
}

std::vector<std::string> Trainer::per_host_candidates(CheckpointStore& store, bool lost) {
    // This rank's verified steps (their manifests list its own shard), newest first.
    std::vector<std::string> notes;
    std::map<int64_t, std::string, std::greater<>> mine;
    for (const auto& dir : store.candidates(&notes)) {
        const YAML::Node manifest = read_manifest(dir);
        bool has_shard = false;
        for (const auto& f : manifest["files"]) has_shard |= f["name"].as<std::string>("") == shard_file_name(par_->mesh.rank);
        if (has_shard) mine.emplace(manifest["step"].as<int64_t>(), dir);
        else notes.push_back(fmt::format("{}: holds no shard of rank {}", dir, par_->mesh.rank));
    }
    for (const auto& why : notes) fmt::print(stderr, "moe-train: rank {} (host {}): checkpoint: {}\n", par_->mesh.rank, host_, why);
    // The newest step every host verifies: the MIN over the ranks of each one's newest step not
    // above the bound, taken when every rank holds it; else below it. A rank that lost its folder
    // takes no part (it recovers from a replica); when every rank lost it, the run starts afresh.
    Communicator& world = *ckpt_world_;
    auto all_lost = torch::tensor({int64_t(lost ? 1 : 0)});
    world.all_reduce(all_lost, ReduceOp::min);
    std::vector<std::string> agreed;
    int64_t bound = INT64_MAX;
    while (all_lost.item<int64_t>() == 0) {
        int64_t newest = -1;
        for (const auto& [step, dir] : mine)
            if (step <= bound) {
                newest = step;
                break;
            }
        auto step = torch::tensor({lost ? INT64_MAX : newest});
        world.all_reduce(step, ReduceOp::min);
        const int64_t s = step.item<int64_t>();
        if (s < 0) break;   // some host holds nothing older: no step every host verifies
        auto everyone = torch::tensor({int64_t(lost || mine.count(s) ? 1 : 0)});
        world.all_reduce(everyone, ReduceOp::min);
        if (everyone.item<int64_t>() == 1) agreed.push_back(lost ? "" : mine[s]);
        bound = s - 1;
    }
    for (const auto& [step, dir] : mine)   // newer than what every host holds
        if (agreed.empty() || step > read_manifest(agreed.front())["step"].as<int64_t>())
            fmt::print(stderr, "moe-train: rank {} (host {}): checkpoint: {}: step {} is not on every host's volume; "
                               "skipped\n", par_->mesh.rank, host_, dir, step);
    if (agreed.empty() && all_lost.item<int64_t>() == 0) {
        auto has_any = torch::tensor({int64_t(mine.empty() ? 0 : 1)});
        world.all_reduce(has_any, ReduceOp::max);
        if (has_any.item<int64_t>() == 1 || !store.list_steps().empty())
            throw CheckpointError(fmt::format("rank {} (host {}): {}: no checkpoint step is verified on every host; "
                                              "refusing to start over beside them (use --resume never to do so)",
                                              par_->mesh.rank, host_, store.root()));
    }
    return agreed;
}

void Trainer::recover_lost_ranks(bool lost, int64_t step) {
    const Mesh& m = par_->mesh;
    Communicator& group = *par_->expert_data;   // the replicas of this rank's stage and expert shard
    auto agreed = torch::tensor({step});   // the step the other ranks loaded (lost ranks say -1)
    par_->world->all_reduce(agreed, ReduceOp::max);
    step = agreed.item<int64_t>();
    const torch::Tensor flags = group.all_gather(torch::tensor({int64_t(lost ? 1 : 0)}, torch::kInt64));
    int donor = -1, lost_members = 0;
    for (int r = 0; r < group.size(); ++r) {
        if (flags[r][0].item<int64_t>() == 1) ++lost_members;
        else if (donor < 0) donor = r;
    }
    // Every rank learns whether some lost rank has no replica, and that rank's words.
    std::string why;
    if (lost && donor < 0)
        why = fmt::format("rank {} (host {}) lost its checkpoint folder {}, and no replica holds step {} of its state "
                          "(stage {}, expert shard {}: no other rank of its expert-data group has it); restore that "
                          "volume, or start over with --resume never",
                          m.rank, host_, checkpoint_dir_, step, m.stage, m.expert_rank);
    else if (lost && sync_->state_differs_per_rank())
        why = fmt::format("rank {} (host {}) lost its checkpoint folder {}, and its replica-sync state (compression "
                          "error feedback, or async SGD) is its own: no replica holds it; restore that volume, or start "
                          "over with --resume never", m.rank, host_, checkpoint_dir_);
    auto first_failing = torch::tensor({int64_t(why.empty() ? INT64_MAX : m.rank)});
    par_->world->all_reduce(first_failing, ReduceOp::min);
    if (const int64_t r = first_failing.item<int64_t>(); r != INT64_MAX)
        throw CheckpointError(broadcast_string(*par_->world, why, int(r)));
    if (lost_members == 0) return;

    // The donor's parameters, optimizer state and training state, broadcast over the group
    // (its other replicas hold the same values already).
    ParameterStore& params = stage_.model->params();
    for (auto g : {ParamGroup::dense, ParamGroup::expert}) {
        if (params.numel(g) == 0) continue;
        torch::NoGradGuard no_grad;
        group.broadcast(params.values(g), donor);
        group.broadcast(optimizer_->exp_avg(g), donor);
        group.broadcast(optimizer_->exp_avg_sq(g), donor);
    }
    TrainingState st = training_state();
    st.step = step;
    double seconds = st.train_seconds;
    int64_t seconds_bits = 0;
    std::memcpy(&seconds_bits, &seconds, sizeof seconds);
    auto ints = torch::tensor({st.step, st.tokens, st.skipped_steps, st.bad_steps_in_a_row, int64_t(st.data.next_sample),
                               optimizer_->step_count(), seconds_bits}, torch::kInt64);
    group.broadcast(ints, donor);
    auto rng = torch::from_blob(st.torch_rng.data(), {int64_t(st.torch_rng.size())}, torch::kUInt8).clone();
    group.broadcast(rng, donor);
    if (!lost) return;
    st.step = ints[0].item<int64_t>();
    st.tokens = ints[1].item<int64_t>();
    st.skipped_steps = ints[2].item<int64_t>();
    st.bad_steps_in_a_row = ints[3].item<int64_t>();
    st.data.next_sample = uint64_t(ints[4].item<int64_t>());
    optimizer_->set_step_count(ints[5].item<int64_t>());
    seconds_bits = ints[6].item<int64_t>();
    std::memcpy(&st.train_seconds, &seconds_bits, sizeof seconds_bits);
    std::memcpy(st.torch_rng.data(), rng.data_ptr<uint8_t>(), st.torch_rng.size());
    adopt_state(st);
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
    for (const auto& t : sync_->state()) snapshot.sync_state.push_back({t.name, staging_copy(t.value)});
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
        // With state that differs per rank, or per-host storage, every rank writes its own shard.
        const bool writer = per_host_ || par_->mesh.replica < par_->mesh.ep || sync_->state_differs_per_rank();
        CheckpointSnapshot snapshot;
        if (writer) snapshot = take_snapshot(stage_.model->params(), *optimizer_, st);
        add_sync_state(snapshot);
        snapshot.state = st;
        Communicator& host = per_host_ ? *ckpt_host_ : *ckpt_world_;
        if (cfg_.checkpoint.async && !wait) {
            store.save_collective_async(std::move(snapshot), *ckpt_world_, host, writer);   // the staging copy is all we wait for
        } else {
            store.wait();
            store.save_collective(snapshot, *ckpt_world_, host, writer);
        }
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
