// Gradient averaging overlapped with backward (lib/parallel/grad_sync.cpp) under mpirun: every
// rank trains the same small MoE model on its own tokens with two micro-batches; the averaged
// gradients must equal the mean of every rank's own gradients, bucket all-reduces must really
// start inside backward, and the overlapped and the after-backward sync must agree bit for bit
// (same buckets, same reductions). Also with global router statistics, which all-reduce over the
// data group during backward while buckets are in flight.
#include <torch/torch.h>   // before doctest: libtorch's logging header defines its own CHECK
#include <doctest/doctest.h>

#include "moe/transformer.h"
#include "mpi_test_world.h"
#include "parallel/grad_sync.h"
#include "parallel/group_stats_dispatcher.h"

using namespace moe;

namespace {

ModelConfig small_model() {
    ModelConfig m;
    m.vocab_size = 32;
    m.d_model = 32;
    m.n_layers = 3;
    m.n_heads = 4;
    m.n_kv_heads = 2;
    m.max_seq_len = 16;
    m.moe.num_experts = 4;
    m.moe.top_k = 2;
    m.moe.ffn_hidden = 48;
    m.moe.capacity_factor = 0;
    m.moe.aux_loss_coef = 0.01;
    m.moe.z_loss_coef = 0.001;
    return m;
}

struct Result {
    torch::Tensor dense, expert;   // gradients after the sync
    int64_t started_in_backward = 0, buckets = 0;
};

// Forward/backward of two micro-batches of this rank's tokens, then the sync (`sync == false`:
// the rank's own gradients, no communication).
Result train_step(bool sync, bool overlap, bool global_stats) {
    Communicator& world = test::world();
    auto data = world.split(0, world.rank(), "data");
    auto expert_data = world.split(0, world.rank(), "expert-data");
    std::shared_ptr<ExpertDispatcher> dispatcher = std::make_shared<LocalDispatcher>(4);
    if (global_stats) dispatcher = std::make_shared<GroupStatsDispatcher>(dispatcher, *data);
    MoeTransformer model(small_model(), dispatcher, /*seed=*/3);
    GradientSync grad_sync(model.params(), *data, *expert_data, /*bucket_mb=*/0.02, overlap);
    torch::manual_seed(50 + world.rank());
    auto tokens = torch::randint(0, 32, {4, 9}, torch::kInt64);
    model.params().zero_grads();
    for (int m = 0; m < 2; ++m) {
        model.set_loss_scale(0.5);
        if (sync && m == 1) grad_sync.arm();
        auto batch = tokens.narrow(0, 2 * m, 2);
        auto loss = MoeTransformer::cross_entropy(model.forward(batch.narrow(1, 0, 8)), batch.narrow(1, 1, 8));
        (loss * 0.5).backward();
    }
    Result r;
    if (sync) {
        grad_sync.start_remaining();
        torch::NoGradGuard no_grad;
        grad_sync.average();
        r.started_in_backward = grad_sync.buckets_started_in_backward();
        r.buckets = grad_sync.num_buckets();
    }
    r.dense = model.params().grads(ParamGroup::dense).clone();
    r.expert = model.params().grads(ParamGroup::expert).clone();
    return r;
}

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).norm().item<double>() / b.norm().item<double>();
}

}  // namespace

TEST_CASE("overlapped gradient averaging equals the mean of every rank's gradients") {
    const double n = test::world().size();
    for (bool global_stats : {false, true}) {
        CAPTURE(global_stats);
        // The reference: each rank's own gradients, summed with one blocking all-reduce.
        // (With global statistics a rank's backward already holds the other ranks' router terms.)
        Result own = train_step(/*sync=*/false, false, global_stats);
        test::world().all_reduce(own.dense);
        test::world().all_reduce(own.expert);
        Result overlapped = train_step(true, /*overlap=*/true, global_stats);
        CHECK(relative_difference(overlapped.dense, own.dense / n) < 1e-6);
        CHECK(relative_difference(overlapped.expert, own.expert / n) < 1e-6);
        // Many small buckets, every one started by a hook inside backward (every parameter gets a
        // gradient); the first ones start while most of backward is still to run.
        CHECK(overlapped.buckets > 4);
        CHECK(overlapped.started_in_backward == overlapped.buckets);

        Result after = train_step(true, /*overlap=*/false, global_stats);
        CHECK(after.started_in_backward == 0);
        CHECK(torch::equal(after.dense, overlapped.dense));
        CHECK(torch::equal(after.expert, overlapped.expert));
    }
}
