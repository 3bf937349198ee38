// Where a parameter's tensors sit, shared by the checkpoint writer and reader (internal to
// lib/checkpoint).
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string>
#include <vector>

#include "moe/parameter_store.h"

namespace moe::checkpoint_detail {

// The HF shape of an entry's tensors (a stacked entry's slices drop the expert dimension).
inline std::vector<int64_t> hf_shape(const ParamEntry& e) {
    auto sizes = e.value.sizes().vec();
    if (e.stacked()) sizes.erase(sizes.begin());
    return sizes;
}

// The same tensor of another buffer laid out like the parameters (AdamW moments share offsets).
inline torch::Tensor same_view(const ParamEntry& e, const torch::Tensor& flat) {
    return flat.narrow(0, e.offset, e.value.numel()).view(e.value.sizes());
}

inline std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

}  // namespace moe::checkpoint_detail
