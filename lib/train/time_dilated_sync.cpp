#include "train/time_dilated_sync.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/error.h"
#include "common/fnv1a.h"
#include "compress/low_rank_compressor.h"
#include "optim/outer_nesterov.h"
#include "parallel/grad_sync.h"
#include "parallel/outer_exchange.h"

namespace moe {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

class TimeDilatedReplicaSync final : public ReplicaSync {
   public:
    TimeDilatedReplicaSync(const Config& cfg, ParameterStore& params, ParallelContext& par)
        : cfg_(cfg.async),
          params_(params),
          par_(par),
          no_group_(make_self_communicator("expert-data-none")),
          // Inside the model replica only: dense gradients over its expert group (divided by ep,
          // as the synchronous sync divides by dp), experts not exchanged at all.
          inner_(params, *par.expert, *no_group_, cfg.parallel.bucket_mb, cfg.parallel.overlap_grad_sync),
          rank_tokens_per_step_(cfg.train.batch_size * cfg.train.seq_len),
          budget_tokens_(cfg.train.steps * cfg.train.batch_size * cfg.train.seq_len * par.mesh.dp),
          global_batch_tokens_(cfg.train.batch_size * cfg.train.seq_len * par.mesh.dp),
          train_steps_(cfg.train.steps),
          every_(cfg.checkpoint.every),
          resumable_(cfg.async.window_steps > 0),
          share_(1.0 / double(par.mesh.dp)) {
        const int64_t replica = par.mesh.replica / par.mesh.ep;
        summary_.replica = replica;
        if (!cfg.simulate.slowdown.empty()) summary_.slowdown = cfg.simulate.slowdown.at(size_t(replica));
        for (auto g : {ParamGroup::dense, ParamGroup::expert}) {
            Group& s = groups_[int(g)];
            s.group = g;
            const int64_t n = params.numel(g);
            if (n == 0) continue;
            s.anchor = params.values(g).detach().clone();   // set again at the first step (after a resume)
            s.outer = std::make_unique<OuterNesterov>(n, cfg_.outer_lr, cfg_.outer_momentum, params.device());
            Communicator& group = g == ParamGroup::dense ? *par.data : *par.expert_data;
            s.exchange = std::make_unique<PseudoGradientExchange>(group, g == ParamGroup::dense ? "dense" : "expert");
            // The pseudo-gradient through the compressor. Its error feedback (E = this rank's M
            // minus the consensus) needs the consensus to be the mean over the group, as for
            // gradients: it divides by the group's size, and the merge scales back to the sum.
            if (cfg.compress.enabled)
                s.compressor = std::make_unique<LowRankCompressor>(cfg.compress, params, g, group, double(group.size()));
        }
        // The dense exchange carries the tokens and stop votes of the whole stage.
        MOE_CHECK(groups_[int(ParamGroup::dense)].exchange, "time-dilated SGD: a stage without dense parameters");
    }

    Communicator& step_group() override { return *par_.expert; }

    void before_last_backward() override {
        if (!started_) {   // the first window starts with the first inner step
            started_ = true;
            if (!state_loaded_) {   // a fresh start (or a checkpoint of a synchronous run): anchor = theta
                torch::NoGradGuard no_grad;
                for (auto& g : groups_)
                    if (g.exchange) g.anchor.copy_(params_.values(g.group));
            }
            next_window_end_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(cfg_.window_seconds));
        }
        inner_.arm();
    }
    void after_backward() override { inner_.start_remaining(); }
    void finish_gradients(int64_t, bool) override {
        inner_.average();   // also on a skipped step: its reductions are in flight
        stats_ = {};
        stats_.seconds = inner_.seconds_last_step();
        stats_.bytes = inner_.bytes_last_step();
        stats_.plain_bytes = (params_.numel(ParamGroup::dense) + params_.numel(ParamGroup::expert)) * int64_t(sizeof(float));
    }
    SyncStats last_step() const override { return stats_; }

    int64_t schedule_step(int64_t) const override {
        // Tokens this rank trained on that no applied merge has counted yet, scaled by its share.
        const int64_t own_unmerged = tokens_since_launch_ + (in_flight() ? launched_tokens_ : 0);
        const double estimate = double(merged_tokens_) + double(own_unmerged) / share_;
        return std::min<int64_t>(train_steps_ - 1, int64_t(std::floor(estimate / double(global_batch_tokens_))));
    }

    bool finished_at(int64_t) const override { return merged_tokens_ >= budget_tokens_; }

    StepOutcome end_step(int64_t steps_done, bool signalled, bool stop_after_reached) override {
        inner_steps_ = steps_done;
        tokens_since_launch_ += rank_tokens_per_step_;
        summary_.tokens += rank_tokens_per_step_ * par_.mesh.ep;
        ++steps_in_window_;
        if (in_flight()) ++steps_since_launch_;

        const bool step_windows = cfg_.window_steps > 0;
        bool window_end = step_windows ? steps_in_window_ >= cfg_.window_steps : Clock::now() >= next_window_end_;
        bool stop = signalled || stop_after_reached;
        bool ready = !in_flight() || (step_windows ? steps_since_launch_ >= 1 : exchanges_complete());
        if (!step_windows && par_.model_replica->size() > 1) {
            // The replica's ranks act together: any rank's window end or stop, all ranks' completion.
            auto flags = torch::tensor({int64_t(window_end), int64_t(stop), int64_t(!ready)});
            par_.model_replica->all_reduce(flags, ReduceOp::max);
            window_end = flags[0].item<int64_t>() != 0;
            stop = flags[1].item<int64_t>() != 0;
            ready = flags[2].item<int64_t>() == 0;
        }
        stop_vote_ = stop_vote_ || stop;

        StepOutcome out;
        if (in_flight() && ready) apply_merge(out);
        if (window_end && !out.finished && !out.stop) {
            if (in_flight()) apply_merge(out);   // the previous merge is needed before the next launch
            if (!out.finished && !out.stop) {
                if (step_windows && par_.model_replica->size() > 1) {   // one vote per replica, as above
                    auto vote = torch::tensor({int64_t(stop_vote_)});
                    par_.model_replica->all_reduce(vote, ReduceOp::max);
                    stop_vote_ = vote.item<int64_t>() != 0;
                }
                if (compressed()) {
                    compressed_merge(out);
                } else {
                    launch();
                    if (cfg_.blocking) apply_merge(out);
                }
            }
        }
        // A periodic save is due every checkpoint.every steps and taken at the first step end
        // with no merge in flight (step windows: the same step on every replica), so the
        // checkpoint holds everything the next step needs.
        if (resumable_ && every_ > 0 && steps_done % every_ == 0) save_due_ = true;
        if (save_due_ && !in_flight() && !out.finished && !out.stop) {
            out.save = true;
            save_due_ = false;
        }
        return out;
    }

    int64_t checkpoint_step(int64_t steps_done) override {
        // Model replica 0 writes the checkpoint (the anchor, its optimizer state and data
        // position): its own inner step count labels it, so the shard's counters add up.
        auto step = torch::tensor({steps_done});
        par_.world->broadcast(step, 0);
        MOE_CHECK(!resumable_ || step.item<int64_t>() == steps_done,
                  "time-dilated SGD: a save at step {} here but {} on rank 0 (step windows keep replicas in step)",
                  steps_done, step.item<int64_t>());
        return step.item<int64_t>();
    }
    bool resumable() const override { return resumable_; }

    // Resumable (step windows): every rank saves its own shard (its theta, inner optimizer state
    // and data position) with the anchor, the outer momentum and the counters below.
    bool state_differs_per_rank() const override { return resumable_; }
    std::vector<SyncStateEntry> state() override {
        std::vector<SyncStateEntry> s;
        if (!resumable_) return s;
        for (auto& g : groups_) {
            if (!g.exchange) continue;
            const std::string name = g.group == ParamGroup::dense ? "dense" : "expert";
            s.push_back({"async/anchor/" + name, g.anchor});
            s.push_back({"async/outer_momentum/" + name, g.outer->momentum_buffer()});
            if (g.compressor)
                for (auto& t : g.compressor->state()) s.push_back({"async/compress/" + t.name, t.value});
        }
        return s;
    }
    std::vector<SyncCounter> counters() override {
        if (!resumable_) return {};
        return {{"merged_tokens", &merged_tokens_},
                {"tokens_since_launch", &tokens_since_launch_},
                {"launched_tokens", &launched_tokens_},
                {"last_merge_tokens", &last_merge_tokens_},
                {"steps_in_window", &steps_in_window_, 0, cfg_.window_steps},
                {"replica_tokens", &summary_.tokens},
                {"windows", &summary_.windows},
                {"merges", &summary_.merges},
                {"staleness_sum", &staleness_sum_},
                {"max_staleness", &summary_.max_staleness},
                {"discarded_steps", &summary_.discarded_steps},
                {"bytes_sent", &summary_.bytes_sent},
                {"anchor_digest", &anchor_digest_, INT64_MIN, INT64_MAX}};
    }
    void state_loaded() override {
        state_loaded_ = true;
        stop_vote_ = false;   // a stop ends an attempt; the next one goes on
        for (auto& g : groups_)
            if (g.compressor) g.compressor->state_loaded();
        if (last_merge_tokens_ > 0) share_ = double(launched_tokens_) / double(last_merge_tokens_);
    }

    std::vector<AsyncReplicaSummary> replica_summaries() override {
        AsyncReplicaSummary mine = summary_;
        mine.inner_steps = inner_steps_;
        mine.mean_staleness = summary_.merges > 0 ? double(staleness_sum_) / double(summary_.merges) : 0.0;
        // Every field as a double (token and byte counts stay far below 2^53).
        auto row = torch::tensor({double(mine.replica), mine.slowdown, double(mine.inner_steps), double(mine.tokens),
                                  double(mine.windows), double(mine.merges), mine.mean_staleness,
                                  double(mine.max_staleness), double(mine.discarded_steps), mine.outer_seconds,
                                  mine.wait_seconds, double(mine.bytes_sent)},
                                 torch::kFloat64);
        const torch::Tensor all = par_.world->all_gather(row);
        const torch::Tensor digests = par_.world->all_gather(torch::tensor({anchor_digest_}, torch::kInt64));
        std::vector<AsyncReplicaSummary> out;
        const Mesh& m = par_.mesh;
        for (int64_t replica = 0; replica < m.dp / m.ep; ++replica) {
            // Its first rank (stage 0, expert shard 0) speaks for it; bytes add up over its ranks.
            const int64_t first = replica * m.ep * m.pp;
            auto r = all[first];
            AsyncReplicaSummary s;
            s.replica = int64_t(r[0].item<double>());
            s.slowdown = r[1].item<double>();
            s.inner_steps = int64_t(r[2].item<double>());
            s.tokens = int64_t(r[3].item<double>());
            s.windows = int64_t(r[4].item<double>());
            s.merges = int64_t(r[5].item<double>());
            s.mean_staleness = r[6].item<double>();
            s.max_staleness = int64_t(r[7].item<double>());
            s.discarded_steps = int64_t(r[8].item<double>());
            s.outer_seconds = r[9].item<double>();
            s.wait_seconds = r[10].item<double>();
            uint64_t digest = kFnv1aOffset;
            for (int64_t k = first; k < first + m.ep * m.pp; ++k) {
                s.bytes_sent += int64_t(all[k][11].item<double>());
                const auto d = uint64_t(digests[k].item<int64_t>());
                digest = fnv1a(digest, &d, sizeof d);
            }
            s.anchor_digest = fmt::format("{:016x}", digest);
            out.push_back(s);
        }
        return out;
    }

   private:
    struct Group {
        ParamGroup group = ParamGroup::dense;
        torch::Tensor anchor;     // theta_anchor: the same bits on every replica
        torch::Tensor launched;   // theta_w when the merge in flight was launched
        std::unique_ptr<OuterNesterov> outer;
        std::unique_ptr<PseudoGradientExchange> exchange;
        std::unique_ptr<LowRankCompressor> compressor;   // compress.enabled: the merge goes through it
    };

    bool in_flight() const { return groups_[0].exchange->in_flight(); }
    bool compressed() const { return groups_[0].compressor != nullptr; }

    // The window's merge with its pseudo-gradient through the compressor, blocking (the
    // compressor's two all-reduces run back to back): each group's gradient buffer, free between
    // the optimizer step and the next step, takes n_w (anchor - theta_w); the compressor leaves
    // the consensus approximation of their mean there (error feedback keeps what it left out for
    // the next merge); times the group's size over the tokens it is the outer step's delta. tau = 0.
    void compressed_merge(StepOutcome& out) {
        torch::NoGradGuard no_grad;
        auto t0 = Clock::now();
        auto counts = torch::tensor({tokens_since_launch_, int64_t(stop_vote_)}, torch::kInt64);
        par_.data->all_reduce(counts);
        const int64_t total = counts[0].item<int64_t>();
        MOE_CHECK(total > 0, "time-dilated SGD: a merge of {} tokens", total);
        stats_.bytes += int64_t(2 * sizeof(int64_t));
        summary_.bytes_sent += int64_t(2 * sizeof(int64_t));
        for (auto& g : groups_) {
            if (!g.exchange) continue;
            torch::Tensor buffer = params_.grads(g.group);
            torch::sub_out(buffer, g.anchor, params_.values(g.group)).mul_(double(tokens_since_launch_));
            g.compressor->reduce(summary_.windows);   // the mean over the group's ranks
            buffer.mul_(double(g.exchange->group_size()) / double(total));
            stats_.bytes += g.compressor->last_step().bytes_sent;
            summary_.bytes_sent += g.compressor->last_step().bytes_sent;
        }
        launched_tokens_ = tokens_since_launch_;
        tokens_since_launch_ = 0;
        next_window();
        summary_.wait_seconds += seconds_since(t0);
        stats_.seconds += seconds_since(t0);

        auto t1 = Clock::now();
        const bool finished = count_merge(total);
        for (auto& g : groups_) {
            if (!g.exchange) continue;
            outer_step(g, params_.grads(g.group));
            params_.values(g.group).copy_(g.anchor);
        }
        ++summary_.merges;
        summary_.outer_seconds += seconds_since(t1);
        out.finished = finished;
        out.stop = !finished && counts[1].item<int64_t>() > 0;
    }

    bool exchanges_complete() {
        bool done = true;
        for (auto& g : groups_)
            if (g.exchange && !g.exchange->test()) done = false;   // test every one: each needs progress
        return done;
    }

    void launch() {
        torch::NoGradGuard no_grad;
        for (auto& g : groups_) {
            if (!g.exchange) continue;
            const torch::Tensor theta = params_.values(g.group);
            g.launched = theta.clone();
            g.exchange->launch(g.anchor, theta, tokens_since_launch_, stop_vote_ ? 1 : 0);
            stats_.bytes += g.exchange->bytes_last();
            summary_.bytes_sent += g.exchange->bytes_last();
        }
        launched_tokens_ = tokens_since_launch_;
        tokens_since_launch_ = 0;
        steps_since_launch_ = 0;
        next_window();
    }

    void next_window() {
        steps_in_window_ = 0;
        ++summary_.windows;
        // Window k ends at start + k T whatever this one overran by (no drift); one that overran
        // a whole window skips to the next boundary ahead.
        const auto window = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg_.window_seconds));
        const auto now = Clock::now();
        while (next_window_end_ <= now) next_window_end_ += window;
    }

    // A merge of `total` tokens (all ranks'): the budget, this rank's share; true when it is spent.
    bool count_merge(int64_t total) {
        merged_tokens_ += total;
        last_merge_tokens_ = total;
        share_ = double(launched_tokens_) / double(total);
        return merged_tokens_ >= budget_tokens_;
    }

    // The outer step on one group's anchor, chained into the digest of anchors.
    void outer_step(Group& g, const torch::Tensor& delta) {
        g.outer->step(g.anchor, delta);
        const torch::Tensor bytes = g.anchor.to(torch::kCPU);   // (the anchor itself where it is on the CPU)
        anchor_digest_ = int64_t(fnv1a(uint64_t(anchor_digest_), bytes.data_ptr(), size_t(bytes.numel()) * bytes.element_size()));
    }

    void apply_merge(StepOutcome& out) {
        auto t_wait = Clock::now();
        for (auto& g : groups_)
            if (g.exchange) g.exchange->wait();
        summary_.wait_seconds += seconds_since(t_wait);
        stats_.seconds += seconds_since(t_wait);

        auto t0 = Clock::now();
        const PseudoGradientExchange& dense = *groups_[int(ParamGroup::dense)].exchange;
        const bool finished = count_merge(dense.total_tokens());
        const bool stop = !finished && dense.stop_votes() > 0;
        const double gamma = std::pow(1.0 + double(steps_since_launch_), -cfg_.staleness_alpha);
        torch::NoGradGuard no_grad;
        for (auto& g : groups_) {
            if (!g.exchange) continue;
            outer_step(g, g.exchange->mean_delta());
            torch::Tensor theta = params_.values(g.group);
            // The run ends on the anchor; so does a stop that cannot be resumed (wall-clock windows).
            // A resumable stop keeps the replica's progress, as the run never stopped would.
            if (finished || (stop && !resumable_) || steps_since_launch_ == 0) {
                theta.copy_(g.anchor);
            } else {
                // theta = anchor + gamma (theta - launched), in place in the parameter buffer.
                theta.sub_(g.launched).mul_(gamma).add_(g.anchor);
            }
            g.launched = torch::Tensor();
        }
        ++summary_.merges;
        staleness_sum_ += steps_since_launch_;
        summary_.max_staleness = std::max(summary_.max_staleness, steps_since_launch_);
        if (finished || (stop && !resumable_)) summary_.discarded_steps += steps_since_launch_;
        summary_.outer_seconds += seconds_since(t0);
        out.finished = finished;
        out.stop = stop;
        steps_since_launch_ = 0;
    }

    AsyncConfig cfg_;
    ParameterStore& params_;
    ParallelContext& par_;
    std::unique_ptr<Communicator> no_group_;
    GradientSync inner_;
    Group groups_[2];
    const int64_t rank_tokens_per_step_, budget_tokens_, global_batch_tokens_, train_steps_, every_;
    const bool resumable_;   // step windows: deterministic, so checkpoints resume bit for bit

    bool started_ = false;
    Clock::time_point next_window_end_;
    int64_t inner_steps_ = 0;
    int64_t steps_in_window_ = 0;      // inner steps since the last launch
    int64_t steps_since_launch_ = 0;   // inner steps since the merge in flight was launched
    int64_t tokens_since_launch_ = 0;  // this rank's tokens not yet in a launched merge
    int64_t launched_tokens_ = 0;      // this rank's tokens in the last launched merge
    int64_t merged_tokens_ = 0;        // all ranks' tokens in the merges applied so far
    double share_;                     // this rank's share of the last merge's tokens
    bool stop_vote_ = false;
    int64_t staleness_sum_ = 0;                     // inner steps between launch and use, over merges
    int64_t last_merge_tokens_ = 0;                 // all ranks' tokens in the last merge applied
    int64_t anchor_digest_ = int64_t(kFnv1aOffset);   // the FNV-1a chain, its bits as int64
    bool save_due_ = false;
    bool state_loaded_ = false;
    AsyncReplicaSummary summary_;
    SyncStats stats_;
};

}  // namespace

std::unique_ptr<ReplicaSync> make_time_dilated_sync(const Config& cfg, ParameterStore& params, ParallelContext& par) {
    return std::make_unique<TimeDilatedReplicaSync>(cfg, params, par);
}

}  // namespace moe
