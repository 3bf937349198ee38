// The process layout: which rank holds which pipeline stage, data replica and expert shard, and
// the groups each rank communicates in. A plain value, validated, testable without MPI.
//
// Rank order: rank = replica * pp + stage, so one replica's stages are consecutive ranks (a
// pipeline's neighbours are usually on the same host). Within a stage, replicas form the data
// group; ep consecutive replicas form an expert group (they hold disjoint expert shards, and
// tokens move between them by all-to-all); replicas holding the same shard form the
// expert-data group (expert gradients are averaged there).
//
//   Mesh m = Mesh::build(/*world=*/4, /*rank=*/3, cfg.parallel, cfg.model.moe.num_experts);
//   m.data_group   -> world ranks of this stage in every replica
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/parallel_config.h"

namespace moe {

struct Mesh {
    int64_t world = 1, rank = 0;
    int64_t pp = 1, dp = 1, ep = 1;
    int64_t stage = 0;          // pipeline stage of this rank
    int64_t replica = 0;        // data-parallel index (0..dp-1)
    int64_t expert_rank = 0;    // index inside the expert group (0..ep-1) = which expert shard
    int64_t num_experts = 0;
    int64_t first_expert = 0, local_experts = 0;   // this rank's expert shard

    // World ranks of each group this rank belongs to, in group-rank order.
    std::vector<int64_t> pipeline_group, data_group, expert_group, expert_data_group;

    // Throws ConfigError naming the numbers when world != pp * dp, dp % ep != 0 or
    // num_experts % ep != 0.
    static Mesh build(int64_t world, int64_t rank, const ParallelConfig& cfg, int64_t num_experts);

    // "pp=1 dp=2 ep=2: rank 3 = stage 0, replica 1, experts 4..7"
    std::string describe() const;
};

}  // namespace moe
