#include "record/system_info.h"

#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#include <thread>

#include "common/build_info.h"
#include "common/error.h"

namespace moe {

std::string host_name() {
    char buf[256] = {0};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
    return buf;
}

YAML::Node library_versions(const std::vector<std::pair<std::string, std::string>>& linked) {
    YAML::Node v;
    v["moe_train"] = MOE_GIT_REV;
    v["build_type"] = MOE_BUILD_TYPE;
    v["libtorch"] = fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
    for (const auto& [name, version] : linked)
        if (!version.empty()) v[name] = version;
    v["compiler"] = __VERSION__;
    return v;
}

YAML::Node host_description() {
    YAML::Node h;
    h["hostname"] = host_name();
    h["cpus"] = std::thread::hardware_concurrency();
    h["gpu"] = torch::cuda::is_available() ? fmt::format("{} CUDA device(s)", torch::cuda::device_count()) : "none";
    return h;
}

}  // namespace moe
