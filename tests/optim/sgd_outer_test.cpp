// The SGD inner optimizer and the outer Nesterov step against libtorch's torch::optim::SGD (the
// reference implementation of both: heavy-ball momentum, and nesterov=true as DiLoCo uses it).
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "moe/fused_ops.h"
#include "optim/optimizer.h"
#include "optim/outer_nesterov.h"

using namespace moe;

TEST_CASE("SGD with momentum matches torch::optim::SGD; decoupled decay spares norms") {
    // Both implementations: the CPU loop, and the ATen ops a CUDA device runs.
    bool fused = true;
    SUBCASE("the CPU loop") { fused = true; }
    SUBCASE("the ATen ops (the CUDA path)") { fused = false; }
    set_fused_cpu_kernels(fused);
    OptimConfig cfg;
    cfg.name = OptimizerKind::sgd;
    cfg.momentum = 0.9;
    cfg.weight_decay = 0.1;

    ParameterStore store;
    size_t w = store.declare("w", {3, 4}, ParamGroup::dense, true);
    size_t n = store.declare("norm", {4}, ParamGroup::dense, false);
    size_t x = store.declare("experts.{}.w1", {2, 3, 2}, ParamGroup::expert, true, 0, 2);
    store.finalize();
    torch::manual_seed(0);
    {
        torch::NoGradGuard g;
        for (size_t i : {w, n, x}) store.get(i).copy_(torch::randn(store.get(i).sizes()));
    }
    // torch's SGD decay is coupled (added to the gradient): the reference applies the decoupled
    // one itself, p *= 1 - lr wd, before its step, on the decayed parameters only.
    std::vector<torch::Tensor> ref = {store.get(w).detach().clone().requires_grad_(true),
                                      store.get(x).detach().clone().requires_grad_(true),
                                      store.get(n).detach().clone().requires_grad_(true)};
    torch::optim::SGD reference(ref, torch::optim::SGDOptions(1e-2).momentum(0.9));

    Optimizer ours(store, cfg);
    for (int step = 0; step < 6; ++step) {
        const double lr = 1e-2 * (1.0 + 0.5 * step);
        static_cast<torch::optim::SGDOptions&>(reference.param_groups()[0].options()).lr(lr);
        auto gw = torch::randn({3, 4}), gx = torch::randn({2, 3, 2}), gn = torch::randn({4});
        store.zero_grads();
        store.get(w).grad().copy_(gw);
        store.get(x).grad().copy_(gx);
        store.get(n).grad().copy_(gn);
        {
            torch::NoGradGuard g;
            ref[0].mul_(1.0 - lr * 0.1);
            ref[1].mul_(1.0 - lr * 0.1);
        }
        ref[0].mutable_grad() = gw.clone();
        ref[1].mutable_grad() = gx.clone();
        ref[2].mutable_grad() = gn.clone();
        ours.step(lr);
        reference.step();
        CHECK(torch::allclose(store.get(w), ref[0], 1e-5, 1e-6));
        CHECK(torch::allclose(store.get(x), ref[1], 1e-5, 1e-6));
        CHECK(torch::allclose(store.get(n), ref[2], 1e-5, 1e-6));
    }
    CHECK(ours.step_count() == 6);
    set_fused_cpu_kernels(true);
}

TEST_CASE("SGD without momentum is p -= lr g, whatever its buffer holds") {
    OptimConfig cfg;
    cfg.name = OptimizerKind::sgd;
    cfg.weight_decay = 0;
    ParameterStore store;
    size_t w = store.declare("w", {5}, ParamGroup::dense, true);
    store.finalize();
    torch::NoGradGuard g;
    store.get(w).copy_(torch::arange(5, torch::kFloat32));
    Optimizer ours(store, cfg);
    for (int step = 0; step < 3; ++step) {
        store.zero_grads();
        store.get(w).grad().fill_(2.0f);
        ours.step(0.25);
    }
    CHECK(torch::equal(store.get(w), torch::arange(5, torch::kFloat32) - 1.5f));
}

TEST_CASE("outer Nesterov matches torch::optim::SGD(nesterov), the pseudo-gradient as its gradient") {
    torch::manual_seed(1);
    torch::Tensor anchor = torch::randn({7});
    torch::Tensor ref = anchor.clone().requires_grad_(true);
    torch::optim::SGD reference({ref}, torch::optim::SGDOptions(0.7).momentum(0.9).nesterov(true));
    OuterNesterov ours(7, 0.7, 0.9);
    for (int k = 0; k < 5; ++k) {
        torch::Tensor delta = torch::randn({7});
        ref.mutable_grad() = delta.clone();
        reference.step();
        ours.step(anchor, delta);
        CHECK(torch::allclose(anchor, ref.detach(), 1e-6, 1e-6));
    }
}

TEST_CASE("outer lr 1 without momentum moves the anchor to the replicas' weighted mean") {
    // delta = anchor - mean(theta): the anchor becomes mean(theta) exactly in float32 here.
    torch::Tensor anchor = torch::tensor({1.0f, 2.0f, 4.0f});
    torch::Tensor mean = torch::tensor({0.5f, 2.5f, 3.0f});
    OuterNesterov ours(3, 1.0, 0.0);
    ours.step(anchor, anchor - mean);
    CHECK(torch::equal(anchor, mean));
    CHECK(torch::equal(ours.momentum_buffer(), torch::zeros({3})));   // no state without momentum
}
