// Facts about the machine and the libraries a run used, for run records and manifests.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

namespace moe {

std::string host_name();
// { moe_train: <git rev>, libtorch, mpi, hdf5, yaml_cpp } as strings.
YAML::Node library_versions();
// { hostname, cpus, gpu }.
YAML::Node host_description();

}  // namespace moe
