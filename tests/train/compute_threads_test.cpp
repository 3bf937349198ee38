// set_compute_threads pins the pools the wheel's libtorch computes with (OpenMP, and MKL on it):
// with 1 thread a large matmul and a large elementwise op start no OS thread; with 2, OpenMP's
// pool appears. (Our own translation units are not built with -fopenmp, so the test watches
// libtorch's kernels, not at::parallel_for inlined here, which would run serially.)
#include <doctest/doctest.h>

#include <dirent.h>

#include "train/compute_threads.h"

namespace {

int os_threads() {
    int n = 0;
    DIR* d = opendir("/proc/self/task");
    REQUIRE(d != nullptr);
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

void big_kernels() {
    auto a = torch::randn({512, 512});
    auto x = torch::randn({1 << 22});
    CHECK(std::isfinite(torch::mm(a, a).sum().item<float>()));
    CHECK(std::isfinite(torch::exp(x * 1e-3).sum().item<float>()));
}

}  // namespace

// In this order: the first case must run before any pool exists.
TEST_CASE("one compute thread: a matmul and an elementwise kernel start no OS thread") {
    moe::set_compute_threads(1);
    const int before = os_threads();
    big_kernels();
    CHECK(os_threads() == before);
}

TEST_CASE("two compute threads: libtorch's kernels start OpenMP's pool") {
    const int before = os_threads();
    moe::set_compute_threads(2);
    CHECK(at::get_num_threads() == 2);
    big_kernels();
    CHECK(os_threads() > before);
    moe::set_compute_threads(1);
}
