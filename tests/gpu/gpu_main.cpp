// main() of the GPU test binary: where this build or machine has no CUDA device it says why and
// exits 77, which ctest reports as skipped (not passed). Otherwise as tests/mpi/mpi_main.cpp: MPI
// world, doctest on every rank, the verdict of all ranks.
#include <torch/torch.h>   // before doctest: libtorch's logging header defines its own CHECK
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <fmt/format.h>

#include "common/error.h"
#include "mpi/doctest_all_ranks.h"
#include "gpu_test_world.h"
#include "parallel/device.h"
#include "parallel/mpi_communicator.h"

namespace {
std::unique_ptr<moe::Communicator> g_world;
c10::Device g_device = c10::kCPU;
}  // namespace

moe::Communicator& moe::test::world() { return *g_world; }
c10::Device moe::test::device() { return g_device; }

int main(int argc, char** argv) {
    try {
        g_device = moe::select_device(moe::DeviceKind::cuda, "test_gpu");   // first: before torch asks about CUDA
    } catch (const moe::ConfigError& e) {
        fmt::print("skipped: no GPU: {}\n", e.what());
        return 77;
    }
    g_world = moe::make_mpi_world();
    const int verdict = moe::test::run_doctest_on_all_ranks(argc, argv, *g_world);
    g_world.reset();
    return verdict;
}
