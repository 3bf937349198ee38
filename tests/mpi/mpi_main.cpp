// main() of the multi-rank test binaries: initialises MPI, runs doctest on every rank (only rank
// 0 prints), and returns failure on every rank when any rank failed, so mpirun's exit code is
// the verdict of all.
#include <torch/torch.h>   // before doctest: libtorch's logging header defines its own CHECK
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "mpi_test_world.h"
#include "parallel/mpi_communicator.h"

namespace {
std::unique_ptr<moe::Communicator> g_world;
}

moe::Communicator& moe::test::world() { return *g_world; }

int main(int argc, char** argv) {
    g_world = moe::make_mpi_world();
    doctest::Context ctx(argc, argv);
    if (g_world->rank() != 0) ctx.setOption("out", "/dev/null");
    const int failed = ctx.run();
    auto flag = torch::tensor({int64_t(failed != 0)});
    g_world->all_reduce(flag, moe::ReduceOp::max);
    g_world.reset();
    return flag.item<int64_t>() != 0 ? 1 : 0;
}
