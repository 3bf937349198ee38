// SVD swarm-consensus compression (lib/compress/low_rank_compressor.cpp) under mpirun, on a
// parameter store shaped like a MoE layer: an attention matrix, stacked experts [E, n, m], a
// router, a norm and an embedding. Gradients are seeded by rank, so every rank knows what the
// others hold and what their mean is.
// - at full rank the result equals the plain mean (to float tolerance), step after step with
//   error feedback; the uncompressed part is the exact mean;
// - the consensus: gradients, Q factors and ranks are bitwise identical on every rank;
// - a rank-2 gradient is recovered exactly at rank 2; E + M_hat = M every step;
// - bytes are counted exactly; before start_step the plain all-reduce runs;
// - the rank rule grows every matrix's rank identically when the energy is low;
// - an SVD refresh gives the exact mean and Q spanning the top right singular vectors.
#include <torch/torch.h>   // before doctest: libtorch's logging header defines its own CHECK
#include <doctest/doctest.h>

#include "compress/low_rank_compressor.h"
#include "mpi_test_world.h"

using namespace moe;

namespace {

struct Store {
    ParameterStore params;
    Store() {
        params.declare("model.embed_tokens.weight", {10, 16}, ParamGroup::dense, true);
        params.declare("model.layers.0.self_attn.q_proj.weight", {24, 16}, ParamGroup::dense, true);
        params.declare("model.layers.0.input_layernorm.weight", {16}, ParamGroup::dense, false);
        params.declare("model.layers.0.block_sparse_moe.gate.weight", {4, 16}, ParamGroup::dense, true);
        params.declare("model.layers.0.block_sparse_moe.experts.{}.w1.weight", {3, 20, 12}, ParamGroup::expert, true, 0, 3);
        params.finalize();
    }
};

// This rank's gradient of step `step` (a fresh draw per rank and step).
torch::Tensor rank_grads(ParamGroup g, int64_t numel, int rank, int64_t step) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t(1000 * step + rank + (g == ParamGroup::expert ? 77 : 0)));
    return torch::randn({numel}, gen, torch::kFloat32);
}

// The mean over every rank of rank_grads.
torch::Tensor mean_grads(ParamGroup g, int64_t numel, int64_t step) {
    auto sum = torch::zeros({numel}, torch::kFloat32);
    for (int r = 0; r < test::world().size(); ++r) sum += rank_grads(g, numel, r, step);
    return sum / double(test::world().size());
}

double rel(const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).norm().item<double>() / std::max(1e-30, b.norm().item<double>());
}

// True when `t` is bitwise the same on every rank.
bool same_everywhere(const torch::Tensor& t) {
    auto all = test::world().all_gather(t.contiguous());
    for (int r = 1; r < test::world().size(); ++r)
        if (!torch::equal(all[r], all[0])) return false;
    return true;
}

CompressConfig full_rank() {
    CompressConfig c;
    c.enabled = true;
    c.rank = c.min_rank = c.max_rank = 64;   // capped at min(n, m) per matrix
    c.min_ratio = 0.01;
    c.refresh_every = 0;
    return c;
}

}  // namespace

TEST_CASE("at full rank the compressed mean is the plain mean, step after step; the consensus is bitwise") {
    Store s;
    const double dp = test::world().size();
    LowRankCompressor dense(full_rank(), s.params, ParamGroup::dense, test::world(), dp);
    LowRankCompressor expert(full_rank(), s.params, ParamGroup::expert, test::world(), dp);
    CHECK(dense.num_compressed() == 1);   // q_proj only: embedding, norm and router stay exact
    CHECK(expert.num_compressed() == 1);  // the stacked experts, as one batch
    CHECK(dense.ranks() == std::vector<int64_t>{16});
    CHECK(expert.ranks() == std::vector<int64_t>{12});
    for (int64_t step = 0; step < 4; ++step) {
        CAPTURE(step);
        for (auto g : {ParamGroup::dense, ParamGroup::expert})
            s.params.grads(g).copy_(rank_grads(g, s.params.numel(g), test::world().rank(), step));
        dense.reduce(step);
        expert.reduce(step);
        for (auto g : {ParamGroup::dense, ParamGroup::expert}) {
            CHECK(rel(s.params.grads(g), mean_grads(g, s.params.numel(g), step)) < 1e-5);
            CHECK(same_everywhere(s.params.grads(g)));
        }
        for (auto* c : {&dense, &expert})
            for (const auto& st : c->state())
                if (st.name.find("/q") != std::string::npos || st.name.find("ranks") != std::string::npos)
                    CHECK(same_everywhere(st.value));
    }
}

TEST_CASE("a rank-2 gradient is recovered at rank 2; E + M_hat = M; bytes are counted exactly") {
    Store s;
    CompressConfig c;
    c.enabled = true;
    c.rank = c.min_rank = c.max_rank = 2;
    c.refresh_every = 0;
    const double dp = test::world().size();
    LowRankCompressor dense(c, s.params, ParamGroup::dense, test::world(), dp);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    // The same rank-2 q_proj gradient on every rank (so the mean is it), random elsewhere.
    const torch::Tensor low = torch::mm(torch::randn({24, 2}, gen), torch::randn({2, 16}, gen));
    for (int64_t step = 0; step < 3; ++step) {
        s.params.grads(ParamGroup::dense).copy_(rank_grads(ParamGroup::dense, s.params.numel(ParamGroup::dense),
                                                           test::world().rank(), step));
        const auto& e = s.params.entries()[1];
        auto q_grad = s.params.grads(ParamGroup::dense).narrow(0, e.offset, e.value.numel()).view({24, 16});
        q_grad.copy_(low);
        const torch::Tensor error_before = dense.state()[0].value.clone().view({24, 16});
        const torch::Tensor m = low + error_before;
        dense.reduce(step);
        const torch::Tensor error_after = dense.state()[0].value.view({24, 16});
        CHECK(rel(error_after + q_grad, m) < 1e-6);   // E + M_hat = M
        if (step == 0) CHECK(rel(q_grad, low) < 1e-5);
        const int64_t flat = 10 * 16 + 16 + 4 * 16;
        CHECK(dense.last_step().bytes_sent == 4 * (24 * 2 + 16 * 2 + flat + 2 * 1));
        CHECK(dense.last_step().bytes_plain == 4 * s.params.numel(ParamGroup::dense));
        CHECK(dense.last_step().compressed);
    }
}

TEST_CASE("before start_step the plain all-reduce runs; the rank rule grows every rank alike") {
    Store s;
    CompressConfig c;
    c.enabled = true;
    c.rank = c.min_rank = 1;
    c.max_rank = 8;
    c.energy_low = 0.99;
    c.energy_high = 0.999;
    c.start_step = 2;
    c.refresh_every = 0;
    c.min_ratio = 1;
    const double dp = test::world().size();
    LowRankCompressor expert(c, s.params, ParamGroup::expert, test::world(), dp);
    const int64_t numel = s.params.numel(ParamGroup::expert);
    for (int64_t step = 0; step < 8; ++step) {
        CAPTURE(step);
        s.params.grads(ParamGroup::expert).copy_(rank_grads(ParamGroup::expert, numel, test::world().rank(), step));
        expert.reduce(step);
        if (step < 2) {
            CHECK(!expert.last_step().compressed);
            CHECK(expert.last_step().bytes_sent == expert.last_step().bytes_plain);
            CHECK(rel(s.params.grads(ParamGroup::expert), mean_grads(ParamGroup::expert, numel, step)) < 1e-6);
            CHECK(expert.ranks() == std::vector<int64_t>{1});
        } else {
            CHECK(expert.last_step().compressed);
            CHECK(expert.last_step().bytes_sent < expert.last_step().bytes_plain);
        }
        CHECK(same_everywhere(torch::tensor(expert.ranks())));
    }
    // Random gradients keep the energy below 0.99: one more rank per compressed step, to the cap
    // ((20 + 12) r < 20 * 12 caps r at 7).
    CHECK(expert.ranks() == std::vector<int64_t>{7});
}

TEST_CASE("an SVD refresh gives the exact mean and a Q spanning its top right singular vectors") {
    Store s;
    CompressConfig c;
    c.enabled = true;
    c.rank = c.min_rank = c.max_rank = 3;
    c.refresh_every = 1;   // every compressed step is a refresh
    const double dp = test::world().size();
    LowRankCompressor dense(c, s.params, ParamGroup::dense, test::world(), dp);
    const int64_t numel = s.params.numel(ParamGroup::dense);
    s.params.grads(ParamGroup::dense).copy_(rank_grads(ParamGroup::dense, numel, test::world().rank(), 0));
    dense.reduce(0);
    CHECK(dense.last_step().refreshed);
    const torch::Tensor mean = mean_grads(ParamGroup::dense, numel, 0);
    CHECK(rel(s.params.grads(ParamGroup::dense), mean) < 1e-6);
    const auto& e = s.params.entries()[1];
    const torch::Tensor M = mean.narrow(0, e.offset, e.value.numel()).view({24, 16});
    const torch::Tensor V = std::get<2>(torch::linalg_svd(M, false)).narrow(0, 0, 3).t();   // [16, 3]
    const torch::Tensor Q = dense.state()[1].value.view({16, 3});
    CHECK(rel(torch::mm(Q, Q.t()), torch::mm(V, V.t())) < 1e-4);   // the same subspace
    CHECK(same_everywhere(Q));
}
