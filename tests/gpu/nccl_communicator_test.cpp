// NcclCommunicator's whole Communicator contract on CUDA tensors, on however many ranks mpirun
// starts (one per GPU; ctest runs one): every rank seeds its data by rank, so each can compute
// what every other should hold. CPU tensors go through the MPI group it wraps.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "common/error.h"
#include "gpu_test_world.h"
#include "parallel/nccl_communicator.h"

using namespace moe;

namespace {

std::unique_ptr<Communicator> nccl_world() { return make_nccl_communicator(test::world().split(0, test::world().rank(), "gpu-world"), test::device()); }

torch::Tensor on_gpu(const torch::Tensor& t) { return t.to(test::device()); }

}  // namespace

TEST_CASE("all_reduce sum / max / min, blocking and asynchronous") {
    auto comm = nccl_world();
    const int n = comm->size(), r = comm->rank();
    auto t = on_gpu(torch::arange(1000, torch::kFloat32) + 1000 * r);
    comm->all_reduce(t);
    auto expect = torch::arange(1000, torch::kFloat32) * n + 1000.0 * n * (n - 1) / 2;
    CHECK(torch::equal(t.cpu(), expect));

    auto m = on_gpu(torch::full({5}, double(r), torch::kFloat64));
    comm->all_reduce(m, ReduceOp::max);
    CHECK(m.cpu()[0].item<double>() == n - 1);
    comm->all_reduce(m, ReduceOp::min);
    CHECK(m.cpu()[0].item<double>() == n - 1);

    auto a = on_gpu(torch::ones({1 << 20}, torch::kFloat32));
    auto request = comm->all_reduce_async(a);
    while (!request->test()) {
    }
    request->wait();   // a completed request waits no more
    CHECK(a.sum().item<double>() == double(n) * (1 << 20));
}

TEST_CASE("variable all_to_all: rank r sends r + 1 + d rows to rank d") {
    auto comm = nccl_world();
    const int n = comm->size(), r = comm->rank();
    const int64_t D = 3;
    std::vector<int64_t> send_counts, recv_counts;
    std::vector<torch::Tensor> rows;
    for (int d = 0; d < n; ++d) {
        send_counts.push_back(r + 1 + d);
        recv_counts.push_back(d + 1 + r);
        rows.push_back(torch::full({r + 1 + d, D}, double(100 * r + d)));
    }
    auto send = on_gpu(torch::cat(rows));
    int64_t total = 0;
    for (auto c : recv_counts) total += c;
    auto recv = on_gpu(torch::empty({total, D}));
    comm->all_to_all(send, send_counts, recv, recv_counts);
    auto got = recv.cpu();
    int64_t at = 0;
    for (int s = 0; s < n; ++s) {
        CHECK(torch::all(got.narrow(0, at, recv_counts[size_t(s)]) == double(100 * s + r)).item<bool>());
        at += recv_counts[size_t(s)];
    }
}

TEST_CASE("broadcast, all_gather, barrier, split; CPU tensors through the MPI group") {
    auto comm = nccl_world();
    const int n = comm->size(), r = comm->rank();
    auto b = on_gpu(torch::full({7}, double(r + 5)));
    comm->broadcast(b, 0);
    CHECK(torch::all(b.cpu() == 5.0).item<bool>());

    auto g = comm->all_gather(on_gpu(torch::full({2, 2}, double(r))));
    CHECK((g.sizes() == std::vector<int64_t>{n, 2, 2}));
    for (int s = 0; s < n; ++s) CHECK(g.cpu()[s][1][1].item<double>() == s);
    comm->barrier();

    auto half = comm->split(r % 2, r, "gpu-half");
    auto h = on_gpu(torch::ones({3}));
    half->all_reduce(h);
    CHECK(h.cpu()[0].item<double>() == (n + 1 - r % 2) / 2);

    auto cpu = torch::full({4}, int64_t(r), torch::kInt64);   // counts, flags: MPI
    comm->all_reduce(cpu);
    CHECK(cpu[0].item<int64_t>() == int64_t(n) * (n - 1) / 2);
    CHECK(cpu.is_cpu());
}

TEST_CASE("pipeline sends of CUDA tensors, non-blocking, in both directions") {
    auto comm = nccl_world();
    const int n = comm->size(), r = comm->rank();
    auto out = on_gpu(torch::full({4, 5}, double(r)));
    auto request = comm->send_async(out, (r + 1) % n, 9);
    auto in = on_gpu(torch::empty({4, 5}));
    comm->recv(in, (r + n - 1) % n, 9);
    request->wait();
    CHECK(torch::all(in.cpu() == double((r + n - 1) % n)).item<bool>());
}

TEST_CASE("a tensor NCCL cannot take is refused naming the call, the rank and the group") {
    auto comm = nccl_world();
    auto strided = on_gpu(torch::ones({4, 4})).t();   // not contiguous
    try {
        comm->all_reduce(strided);
        FAIL("a non-contiguous tensor was accepted");
    } catch (const CommError& e) {
        const std::string what = e.what();
        CHECK(what.find("ncclAllReduce") != std::string::npos);
        CHECK(what.find("rank " + std::to_string(comm->rank())) != std::string::npos);
        CHECK(what.find("gpu-world") != std::string::npos);
    }
}
