// Every trainable tensor of a model (or of one pipeline stage) lives in one of two flat float32
// buffers, dense or expert, and each parameter is a view into them; so are the gradients.
// Why: data-parallel sync reduces whole buffers in buckets (dense over the data group, experts
// over the expert-data group), clipping and AdamW run as single loops over contiguous memory, and
// checkpoints read straight from them.
//
// Names follow Hugging Face Mixtral. Stacked expert weights ([E_local, ...]) are one entry whose
// `name` holds "{}" where the global expert index goes, e.g.
// "model.layers.0.block_sparse_moe.experts.{}.w1.weight"; slice j is expert first_expert + j.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

enum class ParamGroup { dense, expert };

struct ParamEntry {
    std::string name;            // HF name, or a pattern with "{}" for stacked experts
    torch::Tensor value;         // view into the group's flat buffer; requires_grad
    ParamGroup group = ParamGroup::dense;
    bool weight_decay = true;    // false for norms (AdamW skips decay)
    int64_t offset = 0;          // element offset in the group's flat buffer
    int64_t first_expert = 0;    // stacked experts: global index of slice 0
    int64_t num_experts = 0;     // stacked experts: slices held here (0 for non-stacked)

    bool stacked() const { return num_experts > 0; }
    // The HF name of stacked slice j (or the plain name).
    std::string slice_name(int64_t j) const;
};

class ParameterStore {
   public:
    // Declares a parameter; storage is assigned by finalize(). Returns its index.
    size_t declare(std::string name, std::vector<int64_t> shape, ParamGroup group, bool weight_decay,
                   int64_t first_expert = 0, int64_t num_experts = 0);
    // Allocates the flat buffers (values and grads) on `device` and binds every parameter to its views.
    void finalize(const torch::Device& device = torch::kCPU);

    const torch::Tensor& get(size_t index) const { return entries_[index].value; }
    const std::vector<ParamEntry>& entries() const { return entries_; }
    std::vector<ParamEntry>& entries() { return entries_; }

    torch::Tensor& values(ParamGroup g) { return values_[static_cast<int>(g)]; }
    torch::Tensor& grads(ParamGroup g) { return grads_[static_cast<int>(g)]; }
    const torch::Tensor& values(ParamGroup g) const { return values_[static_cast<int>(g)]; }
    const torch::Tensor& grads(ParamGroup g) const { return grads_[static_cast<int>(g)]; }
    int64_t numel(ParamGroup g) const { return sizes_[static_cast<int>(g)]; }

    void zero_grads();
    int64_t total_numel() const { return sizes_[0] + sizes_[1]; }
    torch::Device device() const { return values_[0].device(); }

   private:
    std::vector<ParamEntry> entries_;
    std::vector<std::vector<int64_t>> shapes_;
    int64_t sizes_[2] = {0, 0};
    torch::Tensor values_[2];
    torch::Tensor grads_[2];
    bool finalized_ = false;
};

}  // namespace moe
