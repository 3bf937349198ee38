#include "parallel/all_to_all_dispatcher.h"

#include <chrono>

#include "common/error.h"

namespace moe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows of `input` go to the ranks of `comm` (send[r] rows to rank r); rows arrive by source rank.
// Backward sends the gradient rows back the way they came.
struct ExchangeRows : public torch::autograd::Function<ExchangeRows> {
    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, std::vector<int64_t> send,
                                 std::vector<int64_t> recv, Communicator* comm, ExchangeStats* stats) {
        ctx->saved_data["send"] = send;
        ctx->saved_data["recv"] = recv;
        ctx->saved_data["comm"] = reinterpret_cast<int64_t>(comm);
        ctx->saved_data["stats"] = reinterpret_cast<int64_t>(stats);
        return exchange(input, send, recv, *comm, *stats);
    }
    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto* comm = reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
        auto* stats = reinterpret_cast<ExchangeStats*>(ctx->saved_data["stats"].toInt());
        auto back = exchange(grads[0], ctx->saved_data["recv"].toIntVector(), ctx->saved_data["send"].toIntVector(),
                             *comm, *stats);
        return {back, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
    static torch::Tensor exchange(const torch::Tensor& input, const std::vector<int64_t>& send,
                                  const std::vector<int64_t>& recv, Communicator& comm, ExchangeStats& stats) {
        const auto t0 = std::chrono::steady_clock::now();
        int64_t rows = 0;
        for (auto n : recv) rows += n;
        auto in = input.contiguous();
        auto out = torch::empty({rows, in.size(1)}, in.options());
        comm.all_to_all(in, send, out, recv);
        stats.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        stats.bytes += in.numel() * int64_t(in.element_size());
        return out;
    }
};

struct ExchangeState {
    std::vector<int64_t> send_rows, recv_rows;   // per rank of the group
    torch::Tensor to_expert_order;               // rows as they arrived -> grouped by local expert
    torch::Tensor to_arrival_order;              // the inverse permutation
};

}  // namespace

AllToAllDispatcher::AllToAllDispatcher(Communicator& group, int64_t num_experts)
    : group_(group), num_experts_(num_experts) {
    MOE_CHECK(num_experts % group.size() == 0, "{} experts cannot be split over an expert group of {}", num_experts,
              group.size());
    local_ = num_experts / group.size();
    first_ = group.rank() * local_;
}

DispatchResult AllToAllDispatcher::dispatch(const torch::Tensor& rows_SD, const std::vector<int64_t>& num_tokens_per_expert) {
    const int64_t ep = group_.size(), L = local_;
    MOE_CHECK(int64_t(num_tokens_per_expert.size()) == num_experts_, "dispatch: {} counts for {} experts",
              num_tokens_per_expert.size(), num_experts_);
    // Counts first: row r of `send_counts` holds the rows for rank r's experts.
    auto send_counts = torch::tensor(num_tokens_per_expert, torch::kInt64).view({ep, L}).contiguous();
    auto recv_counts = torch::empty({ep, L}, torch::kInt64);
    const auto t0 = std::chrono::steady_clock::now();
    group_.all_to_all(send_counts, std::vector<int64_t>(size_t(ep), 1), recv_counts, std::vector<int64_t>(size_t(ep), 1));
    stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    ExchangeState st;
    const int64_t* sc = send_counts.data_ptr<int64_t>();
    const int64_t* rc = recv_counts.data_ptr<int64_t>();
    std::vector<int64_t> per_expert(size_t(L), 0);
    for (int64_t r = 0; r < ep; ++r) {
        int64_t s = 0, q = 0;
        for (int64_t j = 0; j < L; ++j) s += sc[r * L + j], q += rc[r * L + j], per_expert[size_t(j)] += rc[r * L + j];
        st.send_rows.push_back(s);
        st.recv_rows.push_back(q);
    }
    auto arrived = ExchangeRows::apply(rows_SD, st.send_rows, st.recv_rows, &group_, &stats_);

    // Rows arrive ordered (source rank, local expert); the experts want (local expert, source rank).
    std::vector<int64_t> block_start(size_t(ep * L));
    for (int64_t r = 0, at = 0; r < ep; ++r)
        for (int64_t j = 0; j < L; ++j) block_start[size_t(r * L + j)] = at, at += rc[r * L + j];
    std::vector<int64_t> order;
    order.reserve(size_t(arrived.size(0)));
    for (int64_t j = 0; j < L; ++j)
        for (int64_t r = 0; r < ep; ++r)
            for (int64_t k = 0; k < rc[r * L + j]; ++k) order.push_back(block_start[size_t(r * L + j)] + k);
    st.to_expert_order = torch::tensor(order, torch::kInt64).to(rows_SD.device());
    st.to_arrival_order = torch::empty_like(st.to_expert_order);
    if (!order.empty())
        st.to_arrival_order.index_put_({st.to_expert_order}, torch::arange(int64_t(order.size()), st.to_expert_order.options()));

    DispatchResult result;
    result.rows_RD = arrived.index_select(0, st.to_expert_order);
    result.num_tokens_per_local_expert = per_expert;
    result.state = std::move(st);
    return result;
}

torch::Tensor AllToAllDispatcher::combine(const torch::Tensor& out_RD, const DispatchResult& dispatched) {
    const auto& st = std::any_cast<const ExchangeState&>(dispatched.state);
    auto in_arrival_order = out_RD.index_select(0, st.to_arrival_order);
    return ExchangeRows::apply(in_arrival_order, st.recv_rows, st.send_rows, &group_, &stats_);
}

torch::Tensor AllToAllDispatcher::all_reduce_sum(const torch::Tensor& t) {
    if (t.requires_grad())
        throw CommError("AllToAllDispatcher::all_reduce_sum sums statistics only; a differentiable sum (the global "
                        "aux-loss scope) goes through GroupStatsDispatcher");
    auto sum = t.detach().contiguous().clone();
    group_.all_reduce(sum);
    return sum;
}

}  // namespace moe
