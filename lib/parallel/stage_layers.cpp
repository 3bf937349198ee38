#include "parallel/stage_layers.h"

#include "common/error.h"

namespace moe {

StageLayers stage_layers(int64_t n_layers, int64_t pp, const std::vector<int64_t>& partition, int64_t stage) {
    MOE_CHECK(pp >= 1 && stage >= 0 && stage < pp, "stage {} of {} stages", stage, pp);
    std::vector<int64_t> counts = partition;
    if (counts.empty())
        for (int64_t s = 0; s < pp; ++s) counts.push_back(n_layers / pp + (s < n_layers % pp ? 1 : 0));
    MOE_CHECK(int64_t(counts.size()) == pp, "a partition of {} entries for {} stages", counts.size(), pp);
    StageLayers out;
    for (int64_t s = 0; s < stage; ++s) out.first += counts[size_t(s)];
    out.count = counts[size_t(stage)];
    return out;
}

}  // namespace moe
