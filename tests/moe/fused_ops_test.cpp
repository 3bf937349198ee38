// Fused kernels against their plain-op twins in float32: values and every gradient.
#include <doctest/doctest.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/torch.h>

#include "moe/fused_ops.h"
#include "moe/layers.h"

using namespace moe;

TEST_CASE("grouped_swiglu equals per-expert swiglu, including experts with no rows") {
    torch::manual_seed(3);
    const int64_t E = 4, F = 12, D = 8;
    std::vector<int64_t> counts = {5, 0, 9, 2};
    const int64_t R = 16;
    auto make = [&](std::vector<int64_t> shape, double scale) {
        return (torch::randn(shape) * scale).requires_grad_(true);
    };
    auto x = make({R, D}, 1.0), w1 = make({E, F, D}, 0.3), w3 = make({E, F, D}, 0.3), w2 = make({E, D, F}, 0.3);
    auto gy = torch::randn({R, D});

    auto fast = grouped_swiglu(x, counts, w1, w3, w2);
    auto gx_w = torch::autograd::grad({fast}, {x, w1, w3, w2}, {gy});

    std::vector<torch::Tensor> outs;
    int64_t off = 0;
    for (int64_t e = 0; e < E; ++e) {
        if (counts[e] == 0) continue;
        outs.push_back(swiglu(x.narrow(0, off, counts[e]), w1[e], w3[e], w2[e]));
        off += counts[e];
    }
    auto ref = torch::cat(outs);
    auto ref_g = torch::autograd::grad({ref}, {x, w1, w3, w2}, {gy});

    CHECK(torch::allclose(fast, ref, 1e-5, 1e-6));
    for (size_t i = 0; i < 4; ++i) {
        CAPTURE(i);
        CHECK(torch::allclose(gx_w[i], ref_g[i], 1e-4, 1e-5));
    }
    CHECK(gx_w[1][1].abs().sum().item<double>() == 0.0);  // idle expert 1: zero gradient
}

// backward() (not autograd::grad) on weights whose .grad exists: grouped_swiglu adds the weight
// gradients into .grad itself. They must still add up with what was there, an idle expert's slice
// must stay as it was, and AccumulateGrad's post-hooks (data-parallel sync starts there) must fire.
TEST_CASE("grouped_swiglu adds weight gradients into existing .grad under backward()") {
    torch::manual_seed(5);
    const int64_t E = 3, F = 10, D = 6;
    std::vector<int64_t> counts = {4, 0, 7};
    const int64_t R = 11;
    auto make = [&](std::vector<int64_t> shape, double scale) {
        return (torch::randn(shape) * scale).requires_grad_(true);
    };
    auto x = make({R, D}, 1.0), w1 = make({E, F, D}, 0.3), w3 = make({E, F, D}, 0.3), w2 = make({E, D, F}, 0.3);
    auto gy = torch::randn({R, D});
    auto ref_g = torch::autograd::grad({grouped_swiglu(x, counts, w1, w3, w2)}, {x, w1, w3, w2}, {gy});

    std::vector<torch::Tensor> before;
    for (auto* w : {&w1, &w3, &w2}) {
        w->mutable_grad() = torch::randn(w->sizes());
        before.push_back(w->grad().clone());
    }
    const void* w1_grad_storage = w1.grad().data_ptr();
    int hooks_fired = 0;
    struct CountingHook : torch::autograd::FunctionPostHook {
        explicit CountingHook(int* n) : n_(n) {}
        torch::autograd::variable_list operator()(const torch::autograd::variable_list& out,
                                                  const torch::autograd::variable_list&) override {
            ++*n_;
            return out;
        }
        int* n_;
    };
    std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;   // held, as GradientSync does
    for (auto* w : {&w1, &w3, &w2}) {
        accumulators.push_back(torch::autograd::impl::grad_accumulator(*w));
        accumulators.back()->add_post_hook(std::make_unique<CountingHook>(&hooks_fired));
    }
    grouped_swiglu(x, counts, w1, w3, w2).backward(gy);

    CHECK(hooks_fired == 3);
    CHECK(w1.grad().data_ptr() == w1_grad_storage);  // added in place, not replaced
    const torch::Tensor* ws[] = {&w1, &w3, &w2};
    for (size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(torch::allclose(ws[i]->grad(), before[i] + ref_g[i + 1], 1e-4, 1e-5));
        CHECK(torch::equal(ws[i]->grad()[1], before[i][1]));  // idle expert 1: nothing added
    }
    CHECK(torch::allclose(x.grad(), ref_g[0], 1e-4, 1e-5));
}

TEST_CASE("fused_rms_norm equals the plain-op RMSNorm") {
    torch::manual_seed(4);
    auto x = torch::randn({3, 7, 16}).requires_grad_(true);
    auto w = (torch::rand({16}) + 0.5).requires_grad_(true);
    auto gy = torch::randn({3, 7, 16});
    auto fast = fused_rms_norm(x, w, 1e-5);
    auto ref = rms_norm_reference(x, w, 1e-5);
    CHECK(torch::allclose(fast, ref, 1e-5, 1e-6));
    auto gf = torch::autograd::grad({fast}, {x, w}, {gy});
    auto gr = torch::autograd::grad({ref}, {x, w}, {gy});
    CHECK(torch::allclose(gf[0], gr[0], 1e-4, 1e-5));
    CHECK(torch::allclose(gf[1], gr[1], 1e-4, 1e-5));
}

TEST_CASE("fused_rotary equals the rotate-half formula, values and gradient") {
    torch::manual_seed(5);
    const int64_t B = 2, S = 6, N = 3, Hd = 8;
    auto rope = RotaryTables::make(16, Hd, 10000.0);
    auto x = torch::randn({B, S, N, Hd}).requires_grad_(true);
    auto gy = torch::randn({B, S, N, Hd});
    auto fast = fused_rotary(x, rope.cos, rope.sin);
    auto ref = apply_rotary(x.transpose(1, 2), rope, S).transpose(1, 2);
    CHECK(torch::allclose(fast, ref, 1e-5, 1e-6));
    auto gf = torch::autograd::grad({fast}, {x}, {gy})[0];
    auto gr = torch::autograd::grad({ref}, {x}, {gy})[0];
    CHECK(torch::allclose(gf, gr, 1e-5, 1e-6));
}
