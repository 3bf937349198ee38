#include "train/pipeline_executor.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "common/error.h"

namespace moe {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Activations and gradients of micro-batch i travel with distinct tags (the ranks exchange in both
// directions; MPI keeps each direction in order anyway).
int activation_tag(int i) { return 2 * i; }
int gradient_tag(int i) { return 2 * i + 1; }

}  // namespace

PipelineExecutor::PipelineExecutor(MoeTransformer& model, Communicator& pipeline, PipelineSchedule schedule)
    : model_(model), pipeline_(pipeline), schedule_(std::move(schedule)), stage_(pipeline.rank()) {
    MOE_CHECK(schedule_.stages == pipeline.size(), "a schedule of {} stages for a pipeline group of {} ranks",
              schedule_.stages, pipeline.size());
    const std::string problem = validate_schedule(schedule_) + simulate_schedule(schedule_);
    MOE_CHECK(problem.empty(), "pipeline schedule '{}': {}", schedule_.name, problem);
    first_ = stage_ == 0;
    last_ = stage_ == schedule_.stages - 1;
    MOE_CHECK(model_.slice().has_embedding == first_ && model_.slice().has_head == last_,
              "stage {} of {} holds the wrong model slice", stage_, schedule_.stages);
}

PipelineStepOutput PipelineExecutor::run(const torch::Tensor& inputs_BS, const torch::Tensor& targets_BS,
                                         const std::function<void()>& before_last_backward) {
    const auto t_step = Clock::now();
    const int M = schedule_.micro_batches;
    const int64_t B = inputs_BS.size(0), S = inputs_BS.size(1), D = model_.config().d_model;
    MOE_CHECK(B >= M, "a batch of {} rows cannot make {} micro-batches", B, M);
    auto rows = [&](int i) { return std::pair<int64_t, int64_t>{i * B / M, (i + 1) * B / M}; };

    // Per micro-batch: the stage's input (a leaf receiving the gradient to send back), what its
    // backward starts from (the output, or the weighted loss on the last stage), the received
    // output gradient.
    std::vector<torch::Tensor> input(static_cast<size_t>(M)), output(input), output_grad(input);
    std::vector<std::pair<torch::Tensor, std::unique_ptr<CommRequest>>> sends;   // tensors kept alive
    auto send = [&](const torch::Tensor& t, int dst, int tag) {
        auto buffer = t.contiguous();
        auto request = pipeline_.send_async(buffer, dst, tag);
        sends.emplace_back(std::move(buffer), std::move(request));
    };
    auto poll_sends = [&] {   // moves sends along and frees the buffers of those complete
        sends.erase(std::remove_if(sends.begin(), sends.end(), [](auto& s) { return s.second->test(); }), sends.end());
    };
    PipelineStepOutput out;
    auto timed_recv = [&](int64_t rows, int src, int tag) {   // a [rows, S, D] tensor; the wait is idle time
        const auto t0 = Clock::now();
        auto t = torch::empty({rows, S, D}, torch::TensorOptions(model_.device()));
        pipeline_.recv(t, src, tag);
        out.idle_seconds += seconds_since(t0);
        return t;
    };
    int backwards_done = 0;
    for (const PipeAction& a : schedule_.per_stage[size_t(stage_)]) {
        const int i = a.micro_batch;
        const auto [lo, hi] = rows(i);
        const double weight = double(hi - lo) / double(B);   // equal micro-batches: 1/M
        switch (a.op) {
            case PipeOp::recv_activation:
                input[size_t(i)] = timed_recv(hi - lo, stage_ - 1, activation_tag(i)).requires_grad_(true);
                break;
            case PipeOp::forward: {
                model_.set_loss_scale(weight);   // the aux/z gradients this forward injects
                torch::Tensor h = first_ ? model_.embed(inputs_BS.narrow(0, lo, hi - lo)) : input[size_t(i)];
                h = model_.forward_layers(h);
                for (const auto& [layer, s] : model_.last_moe_stats()) {
                    out.aux_loss_sum += s.aux_loss * weight;
                    out.z_loss_sum += s.z_loss * weight;
                    out.routed += s.num_routed;
                    out.dropped += s.num_dropped;
                }
                out.moe_layers = int64_t(model_.last_moe_stats().size());
                if (last_) {
                    auto loss = MoeTransformer::cross_entropy(model_.head(h), targets_BS.narrow(0, lo, hi - lo));
                    out.loss += loss.item<double>() * weight;
                    output[size_t(i)] = loss * weight;
                } else {
                    output[size_t(i)] = h;
                }
                poll_sends();
                break;
            }
            case PipeOp::send_activation:
                send(output[size_t(i)].detach(), stage_ + 1, activation_tag(i));
                break;
            case PipeOp::recv_grad:
                output_grad[size_t(i)] = timed_recv(hi - lo, stage_ + 1, gradient_tag(i));
                break;
            case PipeOp::backward: {
                if (++backwards_done == M && before_last_backward) before_last_backward();
                if (last_)
                    output[size_t(i)].backward();
                else
                    output[size_t(i)].backward(output_grad[size_t(i)]);
                output[size_t(i)] = torch::Tensor();   // frees the micro-batch's graph
                output_grad[size_t(i)] = torch::Tensor();
                poll_sends();
                break;
            }
            case PipeOp::send_grad:
                send(input[size_t(i)].grad(), stage_ - 1, gradient_tag(i));
                input[size_t(i)] = torch::Tensor();
                break;
        }
    }
    // The step ends when the last stage's work is done (the first stage's last backward): a stage
    // that finished earlier idles until then, and that is bubble too.
    const auto t0 = Clock::now();
    for (auto& s : sends) s.second->wait();
    if (pipeline_.size() > 1) pipeline_.barrier();
    out.idle_seconds += seconds_since(t0);
    out.seconds = seconds_since(t_step);
    return out;
}

}  // namespace moe
