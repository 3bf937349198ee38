#include "parallel/grad_sync.h"

#include <algorithm>
#include <chrono>

namespace moe {

GradientSync::GradientSync(ParameterStore& params, Communicator& data, Communicator& expert_data, double bucket_mb)
    : params_(params),
      data_(data),
      expert_data_(expert_data),
      bucket_elements_(std::max<int64_t>(1, int64_t(bucket_mb * 1e6 / sizeof(float)))) {}

void GradientSync::average() {
    const auto t0 = std::chrono::steady_clock::now();
    bytes_ = 0;
    struct Pending {
        torch::Tensor bucket;
        std::unique_ptr<CommRequest> request;
        double scale;
    };
    std::vector<Pending> pending;
    for (auto [group, comm] : {std::pair{ParamGroup::dense, &data_}, std::pair{ParamGroup::expert, &expert_data_}}) {
        if (params_.numel(group) == 0) continue;
        torch::Tensor& flat = params_.grads(group);
        if (comm->size() == 1) {
            if (data_.size() > 1) flat.mul_(1.0 / double(data_.size()));   // ep == dp: nothing to add up
            continue;
        }
        for (int64_t at = 0; at < flat.numel(); at += bucket_elements_) {
            torch::Tensor bucket = flat.narrow(0, at, std::min(bucket_elements_, flat.numel() - at));
            auto request = comm->all_reduce_async(bucket);
            // The step's loss is the mean over all replicas: an expert's gradient already sums the
            // contributions of its expert group's tokens, so both kinds divide by the data group's size.
            pending.push_back({bucket, std::move(request), 1.0 / double(data_.size())});
            bytes_ += bucket.numel() * int64_t(sizeof(float));
        }
    }
    for (auto& p : pending) {
        p.request->wait();
        p.bucket.mul_(p.scale);
    }
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace moe
