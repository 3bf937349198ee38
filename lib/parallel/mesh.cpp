#include "parallel/mesh.h"

#include "common/error.h"

namespace moe {

Mesh Mesh::build(int64_t world, int64_t rank, const ParallelConfig& cfg, int64_t num_experts) {
    if (cfg.pp < 1 || cfg.dp < 1 || cfg.ep < 1)
        throw ConfigError(fmt::format("parallel: pp, dp and ep must be positive, got pp={} dp={} ep={}", cfg.pp, cfg.dp, cfg.ep));
    if (world != cfg.pp * cfg.dp)
        throw ConfigError(fmt::format("parallel: {} ranks, but pp x dp = {} x {} = {} (launch {} ranks or change the layout)",
                                      world, cfg.pp, cfg.dp, cfg.pp * cfg.dp, cfg.pp * cfg.dp));
    if (cfg.dp % cfg.ep != 0)
        throw ConfigError(fmt::format("parallel.ep: {} does not divide parallel.dp = {}", cfg.ep, cfg.dp));
    if (num_experts % cfg.ep != 0)
        throw ConfigError(fmt::format("parallel.ep: {} does not divide moe.num_experts = {}", cfg.ep, num_experts));
    MOE_CHECK(rank >= 0 && rank < world, "rank {} outside a world of {}", rank, world);

    Mesh m;
    m.world = world;
    m.rank = rank;
    m.pp = cfg.pp;
    m.dp = cfg.dp;
    m.ep = cfg.ep;
    m.stage = rank % cfg.pp;
    m.replica = rank / cfg.pp;
    m.expert_rank = m.replica % cfg.ep;
    m.num_experts = num_experts;
    m.local_experts = num_experts / cfg.ep;
    m.first_expert = m.expert_rank * m.local_experts;

    auto world_rank = [&](int64_t replica, int64_t stage) { return replica * cfg.pp + stage; };
    for (int64_t s = 0; s < cfg.pp; ++s) m.pipeline_group.push_back(world_rank(m.replica, s));
    for (int64_t d = 0; d < cfg.dp; ++d) m.data_group.push_back(world_rank(d, m.stage));
    const int64_t first_of_expert_group = m.replica - m.expert_rank;
    for (int64_t e = 0; e < cfg.ep; ++e) m.expert_group.push_back(world_rank(first_of_expert_group + e, m.stage));
    for (int64_t d = m.expert_rank; d < cfg.dp; d += cfg.ep) m.expert_data_group.push_back(world_rank(d, m.stage));
    return m;
}

std::string Mesh::describe() const {
    return fmt::format("pp={} dp={} ep={}: rank {} = stage {}, replica {}, experts {}..{}", pp, dp, ep, rank, stage,
                       replica, first_expert, first_expert + local_experts - 1);
}

}  // namespace moe
