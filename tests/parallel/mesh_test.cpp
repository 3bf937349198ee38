// Mesh (lib/parallel/mesh.cpp): the layout arithmetic and its validation, without MPI.
#include <doctest/doctest.h>

#include <set>

#include "common/error.h"
#include "parallel/mesh.h"
#include "parallel/stage_layers.h"

using namespace moe;

namespace {
ParallelConfig layout(int64_t pp, int64_t dp, int64_t ep) {
    ParallelConfig c;
    c.pp = pp;
    c.dp = dp;
    c.ep = ep;
    return c;
}
using Ranks = std::vector<int64_t>;
}  // namespace

TEST_CASE("one rank: every group is itself and it holds every expert") {
    Mesh m = Mesh::build(1, 0, layout(1, 1, 1), 8);
    CHECK(m.data_group == Ranks{0});
    CHECK(m.expert_group == Ranks{0});
    CHECK(m.expert_data_group == Ranks{0});
    CHECK(m.pipeline_group == Ranks{0});
    CHECK(m.first_expert == 0);
    CHECK(m.local_experts == 8);
}

TEST_CASE("dp=4, ep=2: expert groups of two consecutive replicas, expert-data groups across them") {
    Mesh m = Mesh::build(4, 3, layout(1, 4, 2), 8);
    CHECK(m.replica == 3);
    CHECK(m.expert_rank == 1);
    CHECK(m.first_expert == 4);
    CHECK(m.local_experts == 4);
    CHECK(m.data_group == Ranks{0, 1, 2, 3});
    CHECK(m.expert_group == Ranks{2, 3});
    CHECK(m.expert_data_group == Ranks{1, 3});
}

TEST_CASE("pp=2, dp=2, ep=2: a replica's stages are consecutive ranks") {
    Mesh m = Mesh::build(4, 2, layout(2, 2, 2), 4);
    CHECK(m.stage == 0);
    CHECK(m.replica == 1);
    CHECK(m.pipeline_group == Ranks{2, 3});
    CHECK(m.data_group == Ranks{0, 2});
    CHECK(m.expert_group == Ranks{0, 2});
    CHECK(m.expert_data_group == Ranks{2});
    CHECK(m.describe() == "pp=2 dp=2 ep=2: rank 2 = stage 0, replica 1, experts 2..3");
}

TEST_CASE("every rank's groups partition the world consistently") {
    for (auto [pp, dp, ep] : {std::tuple<int64_t, int64_t, int64_t>{1, 4, 4}, {2, 4, 2}, {4, 2, 1}, {2, 6, 3}}) {
        CAPTURE(pp);
        CAPTURE(dp);
        CAPTURE(ep);
        const int64_t world = pp * dp;
        std::vector<Mesh> all;
        for (int64_t r = 0; r < world; ++r) all.push_back(Mesh::build(world, r, layout(pp, dp, ep), 12));
        for (const Mesh& m : all) {
            // Membership is symmetric: each member of my group has the same group.
            for (auto group : {&Mesh::data_group, &Mesh::expert_group, &Mesh::expert_data_group, &Mesh::pipeline_group}) {
                const Ranks& mine = m.*group;
                CHECK(std::find(mine.begin(), mine.end(), m.rank) != mine.end());
                for (int64_t other : mine) CHECK(all[size_t(other)].*group == mine);
            }
            CHECK(m.data_group.size() == size_t(dp));
            CHECK(m.expert_group.size() == size_t(ep));
            CHECK(m.expert_data_group.size() == size_t(dp / ep));
            // An expert group holds every expert exactly once.
            std::set<int64_t> experts;
            for (int64_t r : m.expert_group)
                for (int64_t e = 0; e < all[size_t(r)].local_experts; ++e) experts.insert(all[size_t(r)].first_expert + e);
            CHECK(experts.size() == 12);
        }
    }
}

TEST_CASE("bad layouts are config errors naming the numbers") {
    CHECK_THROWS_WITH_AS(Mesh::build(3, 0, layout(1, 2, 1), 8), doctest::Contains("3 ranks, but pp x dp = 1 x 2 = 2"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(Mesh::build(3, 0, layout(1, 3, 2), 8), doctest::Contains("parallel.ep: 2 does not divide parallel.dp = 3"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(Mesh::build(3, 0, layout(1, 3, 3), 8),
                         doctest::Contains("parallel.ep: 3 does not divide moe.num_experts = 8"), ConfigError);
    CHECK_THROWS_WITH_AS(Mesh::build(2, 0, layout(0, 2, 1), 8), doctest::Contains("pp=0"), ConfigError);
}

TEST_CASE("stage layers: even split with the remainder on the first stages, or the explicit partition") {
    auto layers = [](int64_t n, int64_t pp, std::vector<int64_t> partition) {
        std::vector<std::pair<int64_t, int64_t>> out;
        for (int64_t s = 0; s < pp; ++s) {
            StageLayers l = stage_layers(n, pp, partition, s);
            out.emplace_back(l.first, l.count);
        }
        return out;
    };
    using V = std::vector<std::pair<int64_t, int64_t>>;
    CHECK(layers(4, 1, {}) == V{{0, 4}});
    CHECK(layers(4, 2, {}) == V{{0, 2}, {2, 2}});
    CHECK(layers(3, 2, {}) == V{{0, 2}, {2, 1}});
    CHECK(layers(7, 3, {}) == V{{0, 3}, {3, 2}, {5, 2}});
    CHECK(layers(3, 2, {1, 2}) == V{{0, 1}, {1, 2}});
    CHECK_THROWS(stage_layers(4, 2, {}, 2));
    CHECK_THROWS(stage_layers(4, 2, {4}, 0));
}
