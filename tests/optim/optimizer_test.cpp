// Our fused AdamW against libtorch's torch::optim::AdamW (the reference implementation), with
// one decayed and one non-decayed parameter, over several steps and changing learning rates.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "moe/fused_ops.h"
#include "optim/optimizer.h"
#include "optim/lr_schedule.h"

using namespace moe;

TEST_CASE("AdamW matches torch::optim::AdamW, with no decay on norms") {
    // Both implementations: the CPU loop, and the ATen ops a CUDA device runs.
    bool fused = true;
    SUBCASE("the CPU loop") { fused = true; }
    SUBCASE("the ATen ops (the CUDA path)") { fused = false; }
    set_fused_cpu_kernels(fused);
    OptimConfig cfg;
    cfg.weight_decay = 0.1;
    cfg.beta1 = 0.9;
    cfg.beta2 = 0.95;
    cfg.eps = 1e-8;

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
    std::vector<torch::Tensor> ref_decay = {store.get(w).detach().clone().requires_grad_(true),
                                            store.get(x).detach().clone().requires_grad_(true)};
    std::vector<torch::Tensor> ref_plain = {store.get(n).detach().clone().requires_grad_(true)};
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(ref_decay, std::make_unique<torch::optim::AdamWOptions>(
                                       torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
    groups.emplace_back(ref_plain, std::make_unique<torch::optim::AdamWOptions>(
                                       torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
    torch::optim::AdamW ref(groups, torch::optim::AdamWOptions(1e-2));

    Optimizer ours(store, cfg);
    for (int step = 0; step < 5; ++step) {
        const double lr = 1e-2 * (1.0 + 0.5 * step);
        for (auto& g : ref.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
        auto gw = torch::randn({3, 4}), gn = torch::randn({4}), gx = torch::randn({2, 3, 2});
        store.zero_grads();
        store.get(w).grad().copy_(gw);
        store.get(n).grad().copy_(gn);
        store.get(x).grad().copy_(gx);
        ref_decay[0].mutable_grad() = gw.clone();
        ref_decay[1].mutable_grad() = gx.clone();
        ref_plain[0].mutable_grad() = gn.clone();
        ours.step(lr);
        ref.step();
        CHECK(torch::allclose(store.get(w), ref_decay[0], 1e-5, 1e-6));
        CHECK(torch::allclose(store.get(x), ref_decay[1], 1e-5, 1e-6));
        CHECK(torch::allclose(store.get(n), ref_plain[0], 1e-5, 1e-6));
    }
    CHECK(ours.step_count() == 5);
    set_fused_cpu_kernels(true);
}

TEST_CASE("learning rate: linear warm-up, cosine decay to min_lr at the last step") {
    OptimConfig cfg;
    cfg.lr = 1.0;
    cfg.min_lr_ratio = 0.1;
    cfg.warmup_steps = 4;
    CHECK(learning_rate(cfg, 0, 104) == doctest::Approx(0.25));
    CHECK(learning_rate(cfg, 3, 104) == doctest::Approx(1.0));
    CHECK(learning_rate(cfg, 4, 104) == doctest::Approx(1.0));
    // Halfway through the decay the cosine is at its midpoint.
    CHECK(learning_rate(cfg, 4 + 99 / 2, 104) == doctest::Approx(0.55).epsilon(0.01));
    CHECK(learning_rate(cfg, 103, 104) == doctest::Approx(0.1));
    for (int64_t s = 5; s < 104; ++s) CHECK(learning_rate(cfg, s, 104) <= learning_rate(cfg, s - 1, 104) + 1e-12);
}
