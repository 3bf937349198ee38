// main() of the multi-rank test binaries: initialises MPI, runs doctest on every rank (only rank
// 0 prints), and returns failure on every rank when any rank failed, so mpirun's exit code is
// the verdict of all.
#include <torch/torch.h>   // before doctest: libtorch's logging header defines its own CHECK
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "doctest_all_ranks.h"
#include "mpi_test_world.h"
#include "parallel/mpi_communicator.h"

namespace {
std::unique_ptr<moe::Communicator> g_world;
}

moe::Communicator& moe::test::world() { return *g_world; }

int main(int argc, char** argv) {
    g_world = moe::make_mpi_world();
    const int verdict = moe::test::run_doctest_on_all_ranks(argc, argv, *g_world);
    g_world.reset();
    return verdict;
}
