// The code path a CUDA device runs (plain ATen ops: the fused kernels are CPU loops), run on the
// CPU with the kernels switched off, against the fused path; and bf16 autocast on the CPU.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "moe/fused_ops.h"
#include "moe/precision.h"
#include "moe/transformer.h"

using namespace moe;

namespace {

ModelConfig small_model() {
    ModelConfig c;
    c.vocab_size = 64;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 16;
    c.moe.num_experts = 4;
    c.moe.ffn_hidden = 48;
    return c;
}

struct Pass {
    double loss;
    torch::Tensor grads_dense, grads_expert;
};

// Loss and gradients of one forward + backward of a fresh model on fixed tokens.
Pass run_pass(bool fused, Precision precision) {
    set_fused_cpu_kernels(fused);
    const ModelConfig cfg = small_model();
    MoeTransformer model(cfg, std::make_shared<LocalDispatcher>(cfg.moe.num_experts), 5, {}, torch::kCPU, precision);
    auto gen = at::detail::createCPUGenerator(11);
    auto tokens = torch::randint(cfg.vocab_size, {3, 13}, gen, torch::kInt64);
    auto loss = MoeTransformer::cross_entropy(model.forward(tokens.narrow(1, 0, 12)), tokens.narrow(1, 1, 12));
    loss.backward();
    set_fused_cpu_kernels(true);
    return {loss.item<double>(), model.params().grads(ParamGroup::dense).clone(),
            model.params().grads(ParamGroup::expert).clone()};
}

double relative(const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).norm().item<double>() / b.norm().item<double>();
}

}  // namespace

TEST_CASE("the ATen-only path (what CUDA runs) equals the fused CPU kernels: loss and every gradient") {
    const Pass fused = run_pass(true, Precision::fp32);
    const Pass plain = run_pass(false, Precision::fp32);
    CHECK(plain.loss == doctest::Approx(fused.loss).epsilon(1e-6));
    CHECK(relative(plain.grads_dense, fused.grads_dense) < 1e-5);
    CHECK(relative(plain.grads_expert, fused.grads_expert) < 1e-5);
    CHECK(fused.grads_expert.abs().sum().item<double>() > 0);
}

TEST_CASE("bf16 autocast on the CPU: close to float32, but not float32, on the fused and the plain path") {
    const Pass ref = run_pass(true, Precision::fp32);
    for (bool fused : {true, false}) {
        CAPTURE(fused);
        const Pass bf16 = run_pass(fused, Precision::bf16);
        CHECK(bf16.loss == doctest::Approx(ref.loss).epsilon(1e-2));
        CHECK(bf16.loss != ref.loss);   // the matmuls really ran in bfloat16
        CHECK(relative(bf16.grads_dense, ref.grads_dense) < 5e-2);
        CHECK(relative(bf16.grads_expert, ref.grads_expert) < 5e-2);
    }
}

TEST_CASE("grouped_swiglu under bf16 autocast pads rows per expert and still equals the plain path") {
    torch::manual_seed(4);
    const int64_t E = 3, F = 40, D = 24;
    std::vector<int64_t> counts = {7, 0, 45};   // 45 rows: padded to 64, 7 to 32
    auto make = [&](std::vector<int64_t> shape, double scale) { return (torch::randn(shape) * scale).requires_grad_(true); };
    auto x = make({52, D}, 1.0), w1 = make({E, F, D}, 0.3), w3 = make({E, F, D}, 0.3), w2 = make({E, D, F}, 0.3);
    auto gy = torch::randn({52, D});
    torch::Tensor fast, ref;
    std::vector<torch::Tensor> g_fast, g_ref;
    {
        AutocastScope bf16(torch::kCPU, Precision::bf16);
        fast = grouped_swiglu(x, counts, w1, w3, w2);
        ref = torch::cat({swiglu(x.narrow(0, 0, 7), w1[0], w3[0], w2[0]), swiglu(x.narrow(0, 7, 45), w1[2], w3[2], w2[2])});
    }
    CHECK((fast.scalar_type() == torch::kFloat32));
    g_fast = torch::autograd::grad({fast}, {x, w1, w3, w2}, {gy});
    g_ref = torch::autograd::grad({ref.to(torch::kFloat32)}, {x, w1, w3, w2}, {gy});
    CHECK(relative(fast, ref.to(torch::kFloat32)) < 2e-2);
    for (size_t i = 0; i < 4; ++i) {
        CAPTURE(i);
        CHECK(relative(g_fast[i], g_ref[i]) < 3e-2);
    }
    CHECK(g_fast[1][1].abs().sum().item<double>() == 0.0);   // the idle expert: zero gradient
}

TEST_CASE("AutocastScope restores the state around it and nests") {
    REQUIRE_FALSE(at::autocast::is_autocast_enabled(torch::kCPU));
    {
        AutocastScope outer(torch::kCPU, Precision::bf16);
        CHECK((autocast_matmul_dtype(torch::kCPU) == torch::kBFloat16));
        {
            AutocastScope inner(torch::kCPU, Precision::fp32);
            CHECK((autocast_matmul_dtype(torch::kCPU) == torch::kFloat32));
            CHECK((torch::mm(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type() == torch::kFloat32));
        }
        CHECK((torch::mm(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type() == torch::kBFloat16));
    }
    CHECK_FALSE(at::autocast::is_autocast_enabled(torch::kCPU));
}

TEST_CASE("model FLOPs per token: 6 x matmul parameters per token + causal attention") {
    ModelConfig c = small_model();
    const double D = 32, F = 48, V = 64, S = 12;
    const double per_layer = D * 32 * 2 + D * 16 * 2 + 4 * D + 2 * 3 * D * F;   // q,o; k,v; router; 2 experts
    CHECK(model_flops_per_token(c, 12) == doctest::Approx(6 * (V * D + 2 * per_layer) + 6 * 2 * S * 32));
}
