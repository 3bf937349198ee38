// The fused router arithmetic (softmax_top_k) against its plain-op twin: every output and the
// gradient through each of the three differentiable ones.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "moe/fused_ops.h"
#include "moe/softmax_top_k.h"

using namespace moe;

namespace {

// A scalar that depends on every differentiable output (any subset, by the flags).
torch::Tensor objective(const SoftmaxTopK& r, const torch::Tensor& cp, const torch::Tensor& cw, const torch::Tensor& cl,
                        bool use_probs, bool use_weights, bool use_lse) {
    auto total = torch::zeros({}, r.probs_TE.options());
    if (use_probs) total = total + (r.probs_TE * cp).sum();
    if (use_weights) total = total + (r.weights_TK * cw).sum();
    if (use_lse) total = total + (r.lse_T.square() * cl).sum();
    return total;
}

}  // namespace

TEST_CASE("softmax_top_k equals softmax, topk, renormalisation and logsumexp in plain ops") {
    torch::manual_seed(7);
    const int64_t T = 33, E = 8;
    for (int64_t K : {1, 2, 8}) {
        for (bool renormalize : {true, false}) {
            CAPTURE(K);
            CAPTURE(renormalize);
            auto logits = (torch::randn({T, E}) * 2).requires_grad_(true);
            auto cp = torch::randn({T, E}), cw = torch::randn({T, K}), cl = torch::randn({T});
            auto fast = softmax_top_k(logits, K, renormalize);
            auto ref = softmax_top_k_reference(logits, K, renormalize);
            CHECK(torch::allclose(fast.probs_TE, ref.probs_TE, 1e-6, 1e-7));
            CHECK(torch::equal(fast.ids_TK, ref.ids_TK));
            CHECK(torch::allclose(fast.weights_TK, ref.weights_TK, 1e-6, 1e-7));
            CHECK(torch::allclose(fast.lse_T, ref.lse_T, 1e-6, 1e-6));
            // Gradients with each output alone and all together (an unused output's gradient is undefined).
            const bool flags[][3] = {{true, false, false}, {false, true, false}, {false, false, true}, {true, true, true}};
            for (const auto& f : flags) {
                CAPTURE(f[0]);
                CAPTURE(f[1]);
                CAPTURE(f[2]);
                auto gf = torch::autograd::grad({objective(fast, cp, cw, cl, f[0], f[1], f[2])}, {logits}, {},
                                                /*retain_graph=*/true)[0];
                auto gr = torch::autograd::grad({objective(ref, cp, cw, cl, f[0], f[1], f[2])}, {logits}, {},
                                                /*retain_graph=*/true)[0];
                CHECK(torch::allclose(gf, gr, 1e-5, 1e-6));
            }
        }
    }
}

TEST_CASE("softmax_top_k breaks ties toward the lower expert and survives NaN rows") {
    auto logits = torch::tensor({{0.5f, 2.0f, 2.0f, 0.5f}, {1.0f, 1.0f, 1.0f, 1.0f}});
    auto r = softmax_top_k(logits, 2, true);
    CHECK(r.ids_TK[0][0].item<int64_t>() == 1);
    CHECK(r.ids_TK[0][1].item<int64_t>() == 2);
    CHECK(r.ids_TK[1][0].item<int64_t>() == 0);
    CHECK(r.ids_TK[1][1].item<int64_t>() == 1);
    CHECK(torch::allclose(r.weights_TK, torch::full({2, 2}, 0.5f)));

    auto nan = softmax_top_k(torch::full({1, 4}, std::nanf("")), 2, true);
    auto ids = nan.ids_TK[0];
    CHECK(ids.min().item<int64_t>() >= 0);
    CHECK(ids.max().item<int64_t>() < 4);
    CHECK(ids[0].item<int64_t>() != ids[1].item<int64_t>());
}
