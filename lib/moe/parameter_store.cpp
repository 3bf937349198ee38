#include "moe/parameter_store.h"

#include <fmt/format.h>

#include "common/error.h"

namespace moe {

std::string ParamEntry::slice_name(int64_t j) const {
    if (!stacked()) return name;
    std::string out = name;
    auto pos = out.find("{}");
    return out.replace(pos, 2, std::to_string(first_expert + j));
}

size_t ParameterStore::declare(std::string name, std::vector<int64_t> shape, ParamGroup group, bool weight_decay,
                               int64_t first_expert, int64_t num_experts) {
    MOE_CHECK(!finalized_, "parameter {} declared after finalize()", name);
    ParamEntry e;
    e.name = std::move(name);
    e.group = group;
    e.weight_decay = weight_decay;
    e.first_expert = first_expert;
    e.num_experts = num_experts;
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    e.offset = sizes_[static_cast<int>(group)];
    sizes_[static_cast<int>(group)] += n;
    entries_.push_back(std::move(e));
    shapes_.push_back(std::move(shape));
    return entries_.size() - 1;
}

void ParameterStore::finalize(const torch::Device& device) {
    MOE_CHECK(!finalized_, "ParameterStore::finalize() called twice");
    for (int g = 0; g < 2; ++g) {
        values_[g] = torch::zeros({sizes_[g]}, torch::TensorOptions(device));
        grads_[g] = torch::zeros({sizes_[g]}, torch::TensorOptions(device));
    }
    for (size_t i = 0; i < entries_.size(); ++i) {
        ParamEntry& e = entries_[i];
        int g = static_cast<int>(e.group);
        int64_t n = 1;
        for (int64_t s : shapes_[i]) n *= s;
        e.value = values_[g].narrow(0, e.offset, n).view(shapes_[i]);
        e.value.requires_grad_(true);
        // Autograd accumulates into an existing grad in place, so grads stay views of the flat buffer.
        e.value.mutable_grad() = grads_[g].narrow(0, e.offset, n).view(shapes_[i]);
    }
    finalized_ = true;
}

void ParameterStore::zero_grads() {
    for (auto& g : grads_)
        if (g.defined()) g.zero_();
}

}  // namespace moe
