// How an MoE layer reaches its experts. The layer hands over its routed rows sorted by global
// expert id together with the number of rows per expert; the dispatcher returns the rows this
// rank's experts must process, grouped by local expert; after the experts ran, combine() returns
// their outputs in the layer's original sorted order.
//
// LocalDispatcher (all experts on this process) is the identity. The expert-parallel
// implementation (lib/parallel) exchanges rows with an all-to-all whose backward is the reverse
// exchange. Both must give the same results to float tolerance.
#pragma once

#include <torch/torch.h>

#include <any>
#include <cstdint>
#include <vector>

namespace moe {

struct DispatchResult {
    torch::Tensor rows_RD;                        // rows for local experts, grouped by local expert
    std::vector<int64_t> num_tokens_per_local_expert;  // length = num_local_experts
    std::any state;                               // whatever combine() needs to undo the exchange
};

class ExpertDispatcher {
   public:
    virtual ~ExpertDispatcher() = default;

    virtual int64_t first_local_expert() const = 0;
    virtual int64_t num_local_experts() const = 0;

    // rows_SD: this rank's routed rows sorted by global expert; num_tokens_per_expert: length E.
    virtual DispatchResult dispatch(const torch::Tensor& rows_SD, const std::vector<int64_t>& num_tokens_per_expert) = 0;
    // Inverse of dispatch: expert outputs (same layout as rows_RD) back to this rank's sorted order.
    virtual torch::Tensor combine(const torch::Tensor& out_RD, const DispatchResult& dispatched) = 0;

    // Sums a small statistics tensor over the expert group (router statistics for the global
    // aux loss and for expert-load metrics). Differentiable where the implementation needs it.
    virtual torch::Tensor all_reduce_sum(const torch::Tensor& t) { return t; }
    // Number of ranks whose statistics all_reduce_sum adds up.
    virtual int64_t group_size() const { return 1; }
};

// Every expert lives here: dispatch and combine are the identity.
class LocalDispatcher final : public ExpertDispatcher {
   public:
    explicit LocalDispatcher(int64_t num_experts) : num_experts_(num_experts) {}
    int64_t first_local_expert() const override { return 0; }
    int64_t num_local_experts() const override { return num_experts_; }
    DispatchResult dispatch(const torch::Tensor& rows_SD, const std::vector<int64_t>& num_tokens_per_expert) override {
        return DispatchResult{rows_SD, num_tokens_per_expert, {}};
    }
    torch::Tensor combine(const torch::Tensor& out_RD, const DispatchResult&) override { return out_RD; }

   private:
    int64_t num_experts_;
};

}  // namespace moe
