#include "parallel/outer_exchange.h"

#include "common/error.h"

namespace moe {

PseudoGradientExchange::PseudoGradientExchange(Communicator& group, const std::string& name)
    : comm_(group.split(0, group.rank(), group.name() + "-outer-" + name)) {}

void PseudoGradientExchange::launch(const torch::Tensor& anchor, const torch::Tensor& theta, int64_t tokens,
                                    int64_t stop_vote) {
    MOE_CHECK(!in_flight_, "outer exchange on {}: launched while the previous one is in flight", comm_->name());
    MOE_CHECK(tokens > 0, "outer exchange on {}: a window of {} tokens", comm_->name(), tokens);
    torch::NoGradGuard no_grad;
    // Weighted by this rank's tokens: a replica that saw more data moves the anchor more.
    sum_ = (anchor - theta).mul_(double(tokens));
    counts_ = torch::tensor({tokens, stop_vote}, torch::kInt64);
    bytes_ = sum_.numel() * int64_t(sizeof(float)) + counts_.numel() * int64_t(sizeof(int64_t));
    if (sum_.numel() > 0) sum_request_ = comm_->all_reduce_async(sum_);
    counts_request_ = comm_->all_reduce_async(counts_);
    in_flight_ = true;
}

bool PseudoGradientExchange::test() {
    if (!in_flight_) return true;
    // Both tested every time: MPI progresses a non-blocking collective only inside MPI calls.
    const bool sum_done = !sum_request_ || sum_request_->test();
    const bool counts_done = counts_request_->test();
    return sum_done && counts_done;
}

void PseudoGradientExchange::wait() {
    if (!in_flight_) return;
    if (sum_request_) sum_request_->wait();
    counts_request_->wait();
    sum_request_.reset();
    counts_request_.reset();
    in_flight_ = false;
    total_tokens_ = counts_[0].item<int64_t>();
    stop_votes_ = counts_[1].item<int64_t>();
    MOE_CHECK(total_tokens_ > 0, "outer exchange on {}: {} tokens in total", comm_->name(), total_tokens_);
    torch::NoGradGuard no_grad;
    sum_.div_(double(total_tokens_));
}

}  // namespace moe
