// The fused un-permute (weighted_combine) against its plain-op twin: values and both gradients.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "common/error.h"
#include "moe/fused_ops.h"
#include "moe/weighted_combine.h"

using namespace moe;

TEST_CASE("weighted_combine equals rows * weights index_added into zeros") {
    torch::manual_seed(6);
    const int64_t T = 9, D = 37;   // D not a multiple of the vector width
    // Tokens with two rows (0, 3, 5), one row (1, 8), none (the rest), in mixed order.
    auto ids = torch::tensor({3, 0, 5, 1, 3, 0, 8, 5}, torch::kInt64);
    const int64_t A = ids.size(0);
    auto rows = torch::randn({A, D}).requires_grad_(true);
    auto weights = torch::rand({A}).requires_grad_(true);
    auto g = torch::randn({T, D});

    auto fast = weighted_combine(rows, weights, ids, T);
    auto fast_g = torch::autograd::grad({fast}, {rows, weights}, {g});
    auto ref = weighted_combine_reference(rows, weights, ids, T);
    auto ref_g = torch::autograd::grad({ref}, {rows, weights}, {g});

    CHECK(torch::allclose(fast, ref, 1e-6, 1e-7));
    CHECK(fast[2].abs().sum().item<double>() == 0.0);   // a token without rows
    CHECK(torch::allclose(fast_g[0], ref_g[0], 1e-6, 1e-7));
    CHECK(torch::allclose(fast_g[1], ref_g[1], 1e-5, 1e-6));

    set_fused_cpu_kernels(false);   // the switch reaches it: then it is the twin itself
    CHECK(torch::equal(weighted_combine(rows, weights, ids, T), ref));
    set_fused_cpu_kernels(true);
}

TEST_CASE("weighted_combine refuses a token id outside the output") {
    auto rows = torch::ones({2, 4});
    auto weights = torch::ones({2});
    CHECK_THROWS_AS(weighted_combine(rows, weights, torch::tensor({0, 3}, torch::kInt64), 3), Error);
    CHECK_THROWS_AS(weighted_combine(rows, weights, torch::tensor({-1, 0}, torch::kInt64), 3), Error);
    CHECK(weighted_combine(rows, weights, torch::tensor({0, 2}, torch::kInt64), 3).sum().item<double>() == 8.0);
}
