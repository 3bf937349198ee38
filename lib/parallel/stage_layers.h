// Which decoder layers each pipeline stage holds: the config's explicit `parallel.partition`
// (layers per stage, validated when the config is read), or an even split that gives the
// remainder to the first stages (the last stage also runs the final norm, lm_head and loss).
//
//   StageLayers s = stage_layers(/*n_layers=*/3, /*pp=*/2, {}, /*stage=*/1);   // {first 2, count 1}
#pragma once

#include <cstdint>
#include <vector>

namespace moe {

struct StageLayers {
    int64_t first = 0;
    int64_t count = 0;
};

StageLayers stage_layers(int64_t n_layers, int64_t pp, const std::vector<int64_t>& partition, int64_t stage);

}  // namespace moe
