// MpiCommunicator (lib/parallel/mpi_communicator.cpp) under mpirun with 2 or 3 ranks: every
// collective against the values each rank can compute on its own, uneven and empty all-to-all
// exchanges, groups from split(), and a failing call's message.
#include <torch/torch.h>   // before doctest: libtorch's logging header defines its own CHECK
#include <doctest/doctest.h>

#include "common/error.h"
#include "mpi_test_world.h"
#include "parallel/mpi_communicator.h"

using namespace moe;

TEST_CASE("all_reduce: sum, max and min, blocking and non-blocking") {
    Communicator& w = moe::test::world();
    const int n = w.size(), r = w.rank();
    auto t = torch::full({5}, float(r + 1));
    w.all_reduce(t);
    CHECK(torch::equal(t, torch::full({5}, float(n * (n + 1) / 2))));
    auto i = torch::tensor({int64_t(r), int64_t(-r)});
    w.all_reduce(i, ReduceOp::max);
    CHECK(i[0].item<int64_t>() == n - 1);
    CHECK(i[1].item<int64_t>() == 0);
    auto lo = torch::tensor({double(r)});
    w.all_reduce(lo, ReduceOp::min);
    CHECK(lo.item<double>() == 0.0);
    auto a = torch::full({1000}, 2.0f), b = torch::full({3}, float(r));
    auto ra = w.all_reduce_async(a), rb = w.all_reduce_async(b);
    rb->wait();
    ra->wait();
    CHECK(a[999].item<float>() == 2.0f * float(n));
    CHECK(b[0].item<float>() == float(n * (n - 1) / 2));
}

TEST_CASE("all_to_all with uneven counts, empty exchanges and a rank that receives nothing") {
    Communicator& w = moe::test::world();
    const int n = w.size(), r = w.rank();
    // Rank r sends (r + d) % 3 rows of width 2 to rank d, except that nobody sends to the last rank.
    auto rows_to = [&](int from, int to) { return to == n - 1 ? int64_t(0) : int64_t((from + to) % 3); };
    std::vector<int64_t> send_counts, recv_counts;
    std::vector<float> send_values;
    for (int d = 0; d < n; ++d) {
        send_counts.push_back(rows_to(r, d));
        for (int64_t k = 0; k < rows_to(r, d); ++k) send_values.insert(send_values.end(), {float(100 * r + d), float(k)});
        recv_counts.push_back(rows_to(d, r));
    }
    auto send = torch::tensor(send_values).view({-1, 2});
    int64_t total = 0;
    for (auto c : recv_counts) total += c;
    auto recv = torch::full({total, 2}, -1.0f);
    w.all_to_all(send, send_counts, recv, recv_counts);
    int64_t row = 0;
    for (int s = 0; s < n; ++s)
        for (int64_t k = 0; k < rows_to(s, r); ++k, ++row) {
            CHECK(recv[row][0].item<float>() == float(100 * s + r));
            CHECK(recv[row][1].item<float>() == float(k));
        }
    if (r == n - 1) CHECK(total == 0);
}

TEST_CASE("send/recv around a ring, broadcast and all_gather") {
    Communicator& w = moe::test::world();
    const int n = w.size(), r = w.rank();
    auto out = torch::full({4}, float(r)), in = torch::empty({4});
    if (r % 2 == 0) {
        w.send(out, (r + 1) % n, 7);
        w.recv(in, (r + n - 1) % n, 7);
    } else {
        w.recv(in, (r + n - 1) % n, 7);
        w.send(out, (r + 1) % n, 7);
    }
    CHECK(in[0].item<float>() == float((r + n - 1) % n));
    auto b = torch::full({2, 2}, r == 1 ? 42.0f : 0.0f);
    w.broadcast(b, 1);
    CHECK(b.sum().item<float>() == 168.0f);
    auto g = w.all_gather(torch::tensor({int64_t(r * 10)}));
    REQUIRE(g.size(0) == n);
    for (int k = 0; k < n; ++k) CHECK(g[k][0].item<int64_t>() == 10 * k);
}

TEST_CASE("non-blocking sends both ways around a ring: every rank sends before it receives") {
    // With blocking sends of a large message (beyond the eager limit) this pattern would wait forever.
    Communicator& w = moe::test::world();
    const int n = w.size(), r = w.rank();
    auto to_next = torch::full({1 << 18}, float(r)), to_prev = torch::full({1 << 18}, float(-r));
    auto a = w.send_async(to_next, (r + 1) % n, 1);
    auto b = w.send_async(to_prev, (r + n - 1) % n, 2);
    auto from_prev = torch::empty({1 << 18}), from_next = torch::empty({1 << 18});
    w.recv(from_prev, (r + n - 1) % n, 1);
    w.recv(from_next, (r + 1) % n, 2);
    while (!a->test()) {
    }
    b->wait();
    CHECK(a->test());   // complete requests stay complete
    CHECK(from_prev.min().item<float>() == float((r + n - 1) % n));
    CHECK(from_next.max().item<float>() == float(-((r + 1) % n)));
}

TEST_CASE("split: groups by color, ordered by key, with their own collectives") {
    Communicator& w = moe::test::world();
    const int r = w.rank();
    auto group = w.split(r % 2, -r, "parity");   // reversed order inside each group
    CHECK(group->name() == "parity");
    auto t = torch::tensor({float(r)});
    group->all_reduce(t);
    float expected = 0;
    for (int k = r % 2; k < w.size(); k += 2) expected += float(k);
    CHECK(t.item<float>() == expected);
    int members = 0;
    for (int k = r % 2; k < w.size(); k += 2) ++members;
    CHECK(group->size() == members);
    CHECK(group->rank() == (members - 1) - r / 2);
    group->barrier();
}

TEST_CASE("a failing call names the call, the rank and the group") {
    Communicator& w = moe::test::world();
    auto t = torch::zeros({1});
    const std::string expected = fmt::format("MPI_Send on rank {} of group 'world' failed", w.rank());
    CHECK_THROWS_WITH_AS(w.send(t, w.size() + 5, 1), doctest::Contains(expected.c_str()), CommError);
    auto strided = torch::zeros({4, 4}).t();
    CHECK_THROWS_WITH_AS(w.all_reduce(strided), doctest::Contains("needs a contiguous CPU tensor"), CommError);
}
