#include "parallel/grad_sync.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>
#include <functional>

#include "common/error.h"

namespace moe {

namespace {

// Runs after autograd has accumulated a parameter's gradient (a post-hook on its AccumulateGrad
// node; libtorch 1.13 has no public per-tensor "gradient accumulated" hook). The signature is the
// same in libtorch 2.x.
class GradientReadyHook final : public torch::autograd::FunctionPostHook {
   public:
    GradientReadyHook(std::weak_ptr<bool> alive, std::function<void()> fn) : alive_(std::move(alive)), fn_(std::move(fn)) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list& /*inputs*/) override {
        if (alive_.lock()) fn_();   // the node may outlive the GradientSync that hooked it
        return outputs;
    }

   private:
    std::weak_ptr<bool> alive_;
    std::function<void()> fn_;
};

}  // namespace

GradientSync::GradientSync(ParameterStore& params, Communicator& data, Communicator& expert_data, double bucket_mb,
                           bool overlap)
    : params_(params), data_size_(data.size()) {
    if (data.size() == 1) return;   // one replica: nothing to average
    data_grads_ = data.split(0, data.rank(), data.name() + "-grads");
    if (expert_data.size() > 1) expert_grads_ = expert_data.split(0, expert_data.rank(), expert_data.name() + "-grads");

    // Buckets on parameter boundaries, walking parameters in reverse (the order backward finishes
    // them), one sequence per group; a parameter larger than a bucket gets a bucket of its own.
    const auto bucket_elements = std::max<int64_t>(1, int64_t(bucket_mb * 1e6 / sizeof(float)));
    std::vector<size_t> bucket_of(params.entries().size(), SIZE_MAX);
    for (auto group : {ParamGroup::dense, ParamGroup::expert}) {
        Communicator* comm = group == ParamGroup::dense ? data_grads_.get() : expert_grads_.get();
        if (!comm || params.numel(group) == 0) continue;
        int64_t hi = -1, lo = 0;   // the open bucket covers elements [lo, hi) of the group's buffer
        auto close = [&] {
            if (hi < 0) return;
            buckets_.back().grads = params.grads(group).narrow(0, lo, hi - lo);
            bytes_ += (hi - lo) * int64_t(sizeof(float));
            hi = -1;
        };
        for (size_t i = params.entries().size(); i-- > 0;) {
            const ParamEntry& e = params.entries()[i];
            if (e.group != group) continue;
            const int64_t n = e.value.numel();
            if (hi >= 0 && hi - e.offset > bucket_elements) close();
            if (hi < 0) {
                buckets_.push_back({});
                buckets_.back().comm = comm;
                hi = e.offset + n;
            }
            lo = e.offset;
            bucket_of[i] = buckets_.size() - 1;
            ++buckets_.back().num_params;
        }
        close();
    }
    if (!overlap) return;
    alive_ = std::make_shared<bool>(true);
    for (size_t i = 0; i < params.entries().size(); ++i) {
        if (bucket_of[i] == SIZE_MAX) continue;
        auto accumulator = torch::autograd::impl::grad_accumulator(params.entries()[i].value);
        MOE_CHECK(accumulator, "no gradient accumulator for parameter {}", params.entries()[i].name);
        const size_t b = bucket_of[i];
        accumulator->add_post_hook(std::make_unique<GradientReadyHook>(alive_, [this, b] { on_gradient_ready(b); }));
        accumulators_.push_back(std::move(accumulator));
    }
}

GradientSync::~GradientSync() = default;

void GradientSync::arm() {
    if (accumulators_.empty()) return;
    for (auto& b : buckets_) {
        MOE_CHECK(!b.request, "GradientSync::arm: the previous step's reductions were not awaited");
        b.pending = b.num_params;
    }
    started_in_backward_ = 0;
    armed_ = true;
}

void GradientSync::on_gradient_ready(size_t bucket) {
    if (!armed_) return;   // an earlier micro-batch: gradients are still accumulating
    --buckets_[bucket].pending;
    started_in_backward_ += start_in_order(/*only_ready=*/true);
    poll();
}

// Starts buckets in their fixed order for each group (MPI matches collectives on a communicator by
// issue order), stopping at the first one that is not ready unless `only_ready` is false.
// Returns how many it started.
int64_t GradientSync::start_in_order(bool only_ready) {
    int64_t started = 0;
    for (Communicator* comm : {data_grads_.get(), expert_grads_.get()}) {
        for (auto& b : buckets_) {
            if (b.comm != comm || b.request) continue;
            if (only_ready && b.pending > 0) break;
            b.request = comm->all_reduce_async(b.grads);
            ++started;
        }
    }
    return started;
}

void GradientSync::poll() {
    for (auto& b : buckets_)
        if (b.request) b.request->test();
}

void GradientSync::start_remaining() {
    backward_done_ = std::chrono::steady_clock::now();
    armed_ = false;
    start_in_order(/*only_ready=*/false);
}

void GradientSync::average() {
    if (!backward_done_) start_remaining();
    if (data_size_ > 1) {
        for (auto& b : buckets_) {
            b.request->wait();
            b.request.reset();
        }
        // Dense gradients and expert gradients of every group (also one without other replicas
        // holding its experts, ep == dp) divide by the number of replicas.
        for (auto group : {ParamGroup::dense, ParamGroup::expert})
            if (params_.numel(group) > 0) params_.grads(group).mul_(1.0 / double(data_size_));
    }
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - *backward_done_).count();
    backward_done_.reset();
}

}  // namespace moe
