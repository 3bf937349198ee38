#include "train/replica_sync.h"

#include "compress/low_rank_compressor.h"
#include "parallel/grad_sync.h"
#include "train/time_dilated_sync.h"

namespace moe {

namespace {

// The clock of strategies whose replicas take every step together: the run ends after
// train.steps steps, a stop on any rank stops every rank after the same step (one tiny
// all-reduce over the world per step), checkpoints every checkpoint.every steps.
class StepLockedReplicaSync : public ReplicaSync {
   public:
    StepLockedReplicaSync(const Config& cfg, ParallelContext& par)
        : steps_(cfg.train.steps), every_(cfg.checkpoint.every), par_(par) {}

    Communicator& step_group() override { return *par_.data; }
    bool finished_at(int64_t steps_done) const override { return steps_done >= steps_; }
    StepOutcome end_step(int64_t steps_done, bool signalled, bool stop_after_reached) override {
        StepOutcome o;
        o.finished = finished_at(steps_done);
        bool stop = signalled;
        if (par_.world->size() > 1) {
            auto flag = torch::tensor({int64_t(signalled)});
            par_.world->all_reduce(flag, ReduceOp::max);
            stop = flag.item<int64_t>() != 0;
        }
        o.stop = stop || (stop_after_reached && !o.finished);   // --stop-after is the same count everywhere
        o.save = every_ > 0 && steps_done % every_ == 0;
        return o;
    }

   private:
    int64_t steps_, every_;
    ParallelContext& par_;
};

// Synchronous data parallelism: dense gradients averaged over the data group, expert gradients
// over the expert-data group, in buckets started by autograd hooks while backward runs.
class PlainReplicaSync final : public StepLockedReplicaSync {
   public:
    PlainReplicaSync(const Config& cfg, ParameterStore& params, ParallelContext& par)
        : StepLockedReplicaSync(cfg, par),
          sync_(params, *par.data, *par.expert_data, cfg.parallel.bucket_mb, cfg.parallel.overlap_grad_sync) {}

    void before_last_backward() override { sync_.arm(); }
    void after_backward() override { sync_.start_remaining(); }
    void finish_gradients(int64_t, bool) override { sync_.average(); }
    SyncStats last_step() const override {
        SyncStats s;
        s.seconds = sync_.seconds_last_step();
        s.bytes = s.plain_bytes = sync_.bytes_last_step();
        return s;
    }

   private:
    GradientSync sync_;
};

// SVD swarm-consensus compression after backward: dense gradients over the data group, expert
// gradients over the expert-data group (both divided by dp, as the plain sync does). Nothing
// overlaps backward (P needs a matrix's whole gradient plus its error); inside the exchange the
// flat part travels while P and Q are computed.
class CompressedReplicaSync final : public StepLockedReplicaSync {
   public:
    CompressedReplicaSync(const Config& cfg, ParameterStore& params, ParallelContext& par)
        : StepLockedReplicaSync(cfg, par),
          dense_(cfg.compress, params, ParamGroup::dense, *par.data, double(par.mesh.dp)),
          expert_(cfg.compress, params, ParamGroup::expert, *par.expert_data, double(par.mesh.dp)) {}

    void before_last_backward() override {}
    void after_backward() override {}
    void finish_gradients(int64_t step, bool skipped) override {
        stats_ = {};
        if (skipped) return;   // every rank skips it: no exchange, and no error feedback from it
        dense_.reduce(step);
        expert_.reduce(step);
        const CompressStats& d = dense_.last_step();
        const CompressStats& e = expert_.last_step();
        stats_.seconds = d.seconds + e.seconds;
        stats_.bytes = d.bytes_sent + e.bytes_sent;
        stats_.plain_bytes = d.bytes_plain + e.bytes_plain;
        int64_t ranked = 0, measured = 0;
        double energy = 0, rank = 0;
        for (const auto* c : {&dense_, &expert_}) {
            const CompressStats& st = c->last_step();
            if (!st.compressed || c->num_compressed() == 0) continue;
            for (int64_t r : c->ranks()) rank += double(r);
            ranked += c->num_compressed();
            if (st.refreshed) continue;   // an exact step measures no energy
            energy += st.mean_energy * double(c->num_compressed());
            measured += c->num_compressed();
        }
        if (ranked > 0) stats_.mean_rank = rank / double(ranked);
        if (measured > 0) stats_.energy = energy / double(measured);
    }
    SyncStats last_step() const override { return stats_; }

    std::vector<SyncStateEntry> state() override {
        std::vector<SyncStateEntry> s;
        for (auto* c : {&dense_, &expert_})
            for (auto& t : c->state()) s.push_back({"compress/" + t.name, t.value});
        return s;
    }
    bool state_differs_per_rank() const override { return true; }   // error buffers are each rank's
    void state_loaded() override {
        dense_.state_loaded();
        expert_.state_loaded();
    }

   private:
    LowRankCompressor dense_, expert_;
    SyncStats stats_;
};

}  // namespace

std::unique_ptr<ReplicaSync> make_replica_sync(const Config& cfg, ParameterStore& params, ParallelContext& par) {
    if (cfg.async.enabled) return make_time_dilated_sync(cfg, params, par);
    if (cfg.compress.enabled) return std::make_unique<CompressedReplicaSync>(cfg, params, par);
    return std::make_unique<PlainReplicaSync>(cfg, params, par);
}

}  // namespace moe
