// PseudoGradientExchange (lib/parallel/outer_exchange.cpp) under mpirun with 2 or 3 ranks: the
// token-weighted mean of anchor - theta against the value each rank computes on its own, the
// stop votes, completion while another collective runs on the same group, and bad use refused.
#include <torch/torch.h>   // before doctest: libtorch's logging header defines its own CHECK
#include <doctest/doctest.h>

#include "common/error.h"
#include "mpi_test_world.h"
#include "parallel/outer_exchange.h"

using namespace moe;

TEST_CASE("outer exchange: token-weighted mean delta, total tokens, stop votes") {
    Communicator& w = moe::test::world();
    const int n = w.size(), r = w.rank();
    PseudoGradientExchange ex(w, "test");
    const torch::Tensor anchor = torch::full({6}, 1.0f);
    // Rank k moved to theta = 1 - (k + 1) after (k + 1) * 10 tokens; votes to stop if k == 1.
    const torch::Tensor theta = anchor - float(r + 1);
    ex.launch(anchor, theta, int64_t(r + 1) * 10, r == 1 ? 1 : 0);
    CHECK(ex.in_flight());
    // Another collective on the same group while the exchange is in flight (it runs on a duplicate).
    auto other = torch::full({3}, 1.0f);
    w.all_reduce(other);
    CHECK(other[0].item<float>() == float(n));
    while (!ex.test()) {
    }
    ex.wait();
    CHECK_FALSE(ex.in_flight());
    double weighted = 0, tokens = 0;
    for (int k = 0; k < n; ++k) {
        weighted += double(k + 1) * 10 * double(k + 1);
        tokens += double(k + 1) * 10;
    }
    CHECK(ex.total_tokens() == int64_t(tokens));
    CHECK(ex.stop_votes() == (n > 1 ? 1 : 0));
    CHECK(torch::allclose(ex.mean_delta(), torch::full({6}, float(weighted / tokens)), 1e-6, 1e-6));
    CHECK(ex.bytes_last() == 6 * 4 + 2 * 8);
}

TEST_CASE("outer exchange: a second launch in flight and an empty window are refused") {
    Communicator& w = moe::test::world();
    PseudoGradientExchange ex(w, "test");
    const torch::Tensor anchor = torch::zeros({2});
    CHECK_THROWS_WITH_AS(ex.launch(anchor, anchor, 0, 0), doctest::Contains("a window of 0 tokens"), Error);
    ex.launch(anchor, anchor, 5, 0);
    CHECK_THROWS_WITH_AS(ex.launch(anchor, anchor, 5, 0), doctest::Contains("in flight"), Error);
    ex.wait();
    CHECK(torch::equal(ex.mean_delta(), torch::zeros({2})));
}
