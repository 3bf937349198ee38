// Facts about the machine and the libraries a run used, for run records and manifests.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <utility>
#include <vector>

namespace moe {

std::string host_name();
// { moe_train: <git rev>, build_type, libtorch, <linked...>, compiler } as strings. `linked` names the
// libraries whose versions only their own layer may ask (MPI in lib/parallel, HDF5 in lib/checkpoint).
YAML::Node library_versions(const std::vector<std::pair<std::string, std::string>>& linked);
// { hostname, cpus, gpu }.
YAML::Node host_description();

}  // namespace moe
