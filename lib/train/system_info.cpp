#include "train/system_info.h"

#include <hdf5.h>
#include <mpi.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#include <thread>

#include "common/build_info.h"
#include "common/error.h"
#include "train/hdf5_file.h"

namespace moe {

std::string host_name() {
    char buf[256] = {0};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
    return buf;
}

YAML::Node library_versions() {
    YAML::Node v;
    v["moe_train"] = MOE_GIT_REV;
    v["build_type"] = MOE_BUILD_TYPE;
    v["libtorch"] = fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
    int len = 0;
    // Allowed before MPI_Init. The first line names the implementation and version.
    if (MPI_Get_library_version(mpi, &len) == MPI_SUCCESS) {
        std::string s(mpi, static_cast<size_t>(len));
        v["mpi"] = s.substr(0, s.find_first_of(",\n"));
    }
    unsigned maj = 0, min = 0, rel = 0;
    initialise_hdf5();
    if (H5get_libversion(&maj, &min, &rel) >= 0) v["hdf5"] = fmt::format("{}.{}.{}", maj, min, rel);
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
