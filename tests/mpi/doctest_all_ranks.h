// doctest on every rank of a multi-rank test binary (tests/mpi/mpi_main.cpp, tests/gpu/gpu_main.cpp):
// only rank 0 prints, and every rank returns failure when any rank failed, so mpirun's exit code
// is the verdict of all. Include after <doctest/doctest.h> with DOCTEST_CONFIG_IMPLEMENT.
#pragma once

#include <torch/torch.h>

#include "parallel/communicator.h"

namespace moe::test {

inline int run_doctest_on_all_ranks(int argc, char** argv, Communicator& world) {
    doctest::Context ctx(argc, argv);
    if (world.rank() != 0) ctx.setOption("out", "/dev/null");
    const int failed = ctx.run();
    auto flag = torch::tensor({int64_t(failed != 0)});
    world.all_reduce(flag, ReduceOp::max);
    return flag.item<int64_t>() != 0 ? 1 : 0;
}

}  // namespace moe::test
