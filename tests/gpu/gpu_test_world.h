// The MPI world and the CUDA device of the GPU test binary (tests/gpu/gpu_main.cpp).
#pragma once

#include <c10/core/Device.h>

#include "parallel/communicator.h"

namespace moe::test {

Communicator& world();
c10::Device device();

}  // namespace moe::test
