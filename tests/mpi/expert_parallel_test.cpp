// Expert parallelism at the layer level (lib/parallel/all_to_all_dispatcher.cpp) under mpirun:
// every rank routes its own tokens; with the experts spread over the ranks (all-to-all dispatch)
// the MoE layer must give each rank the outputs and input gradients of the single-process layer
// holding every expert, and each expert's weight gradient must be the sum of the gradients the
// single-process layers produce on every rank's tokens. Top-1 and top-2, dropless and with
// capacity dropping, and skewed routing that sends no token to the last rank's experts.
#include <torch/torch.h>   // before doctest: libtorch's logging header defines its own CHECK
#include <doctest/doctest.h>

#include "common/error.h"
#include "moe/moe_layer.h"
#include "parallel/all_to_all_dispatcher.h"
#include "mpi_test_world.h"
#include "parallel/mpi_communicator.h"

using namespace moe;

namespace {

struct Case {
    const char* name;
    int64_t K;
    double capacity_factor;
    bool skewed;
};

struct Grads {
    torch::Tensor out, x, gate, w1, w3, w2;
};

// One layer forward + backward in float64 with `dispatcher`; expert weights are the slice
// [first, first + n) of the full ones.
Grads run_layer(const Case& c, ExpertDispatcher& dispatcher, int64_t first, int64_t n) {
    const int64_t E = 4 * moe::test::world().size(), D = 6, F = 5, T = 9;
    torch::manual_seed(7);   // the same weights on every rank
    auto gate = torch::randn({E, D}, torch::kFloat64);
    auto w1 = torch::randn({E, F, D}, torch::kFloat64) * 0.3, w3 = torch::randn({E, F, D}, torch::kFloat64) * 0.3;
    auto w2 = torch::randn({E, D, F}, torch::kFloat64) * 0.3;
    torch::manual_seed(100 + moe::test::world().rank());   // each rank its own tokens
    auto x = torch::randn({T, D}, torch::kFloat64), grad_out = torch::randn({T, D}, torch::kFloat64);
    if (c.skewed) {   // positive tokens, and the last rank's experts score negative on all of them
        x = x.abs();
        gate.narrow(0, E - 4, 4).copy_(-gate.narrow(0, E - 4, 4).abs());
        gate.narrow(0, 0, E - 4).abs_();
    }
    MoeWeights w;
    w.gate = gate.requires_grad_(true);
    w.w1 = w1.narrow(0, first, n).clone().requires_grad_(true);
    w.w3 = w3.narrow(0, first, n).clone().requires_grad_(true);
    w.w2 = w2.narrow(0, first, n).clone().requires_grad_(true);
    x.requires_grad_(true);
    MoeConfig cfg;
    cfg.num_experts = E;
    cfg.top_k = c.K;
    cfg.capacity_factor = c.capacity_factor;
    MoeLayerOutput out = moe_forward(x, w, cfg, dispatcher, 0.01, 0.001);
    out.out_TD.backward(grad_out);
    // An expert that got no rows has no gradient at all: that is a zero gradient.
    auto grad = [](const torch::Tensor& p) { return p.grad().defined() ? p.grad() : torch::zeros_like(p); };
    return {out.out_TD.detach(), grad(x), grad(w.gate), grad(w.w1), grad(w.w3), grad(w.w2)};
}

void check_close(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
    const std::string tensor = what;
    CAPTURE(tensor);
    REQUIRE(a.sizes() == b.sizes());
    const double diff = a.numel() ? (a - b).abs().max().item<double>() : 0.0;
    CHECK(diff < 1e-10);
}

}  // namespace

TEST_CASE("all-to-all expert dispatch equals every expert on every rank, in outputs and gradients") {
    Communicator& world = moe::test::world();
    const int64_t E = 4 * world.size();
    for (const Case& c : {Case{"top-2 dropless", 2, 0.0, false}, Case{"top-1 dropless", 1, 0.0, false},
                          Case{"top-2 capacity 1.0", 2, 1.0, false}, Case{"top-1 capacity 0.5", 1, 0.5, false},
                          Case{"top-2 skewed: last rank gets nothing", 2, 0.0, true}}) {
        const std::string name = c.name;
        CAPTURE(name);
        LocalDispatcher local(E);
        Grads ref = run_layer(c, local, 0, E);
        AllToAllDispatcher a2a(world, E);
        Grads ep = run_layer(c, a2a, a2a.first_local_expert(), a2a.num_local_experts());
        check_close(ep.out, ref.out, "output");
        check_close(ep.x, ref.x, "input gradient");
        check_close(ep.gate, ref.gate, "router gradient");
        // An expert's gradient collects every rank's tokens: sum the single-process gradients.
        const int64_t first = a2a.first_local_expert(), n = a2a.num_local_experts();
        for (auto [mine, full, what] : {std::tuple{ep.w1, ref.w1, "w1 gradient"}, std::tuple{ep.w3, ref.w3, "w3 gradient"},
                                        std::tuple{ep.w2, ref.w2, "w2 gradient"}}) {
            auto summed = full.contiguous();
            world.all_reduce(summed);
            check_close(mine, summed.narrow(0, first, n), what);
        }
        if (c.skewed && world.rank() == world.size() - 1) CHECK(ep.w1.abs().sum().item<double>() == 0.0);
    }
}

TEST_CASE("the dispatcher's own sum is for statistics only: a tensor needing a gradient is refused") {
    AllToAllDispatcher a2a(moe::test::world(), 4 * moe::test::world().size());
    auto t = torch::ones({3}, torch::kFloat64).requires_grad_(true);
    CHECK_THROWS_WITH_AS(a2a.all_reduce_sum(t * 2), doctest::Contains("sums statistics only"), CommError);
    auto counts = torch::ones({2}, torch::kFloat64);
    CHECK(a2a.all_reduce_sum(counts)[0].item<double>() == double(moe::test::world().size()));
}
