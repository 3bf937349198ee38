// SVD swarm-consensus gradient compression (PowerSGD family; DESIGN.md section 6) for one group
// of parameters (dense, or experts) over one communicator.
//
// Per compressed matrix M_BNM (a 2-D weight as a batch of 1; stacked experts [E, n, m] as a
// batch of E, with bmm), error buffer E_BNM (init 0) and right factor Q_BMR (initialised from a
// seed every rank shares):
//   M += E;  P = M Q;  allreduce_sum(P);  P = orthonormalise(P);  Q = M^T P;
//   Q = allreduce_sum(Q) / divisor;  M_hat = P Q^T;  E = M - M_hat;  grad = M_hat.
// All P's of a step go in one all-reduce, all Q's in another. Every rank ends with identical P,
// Q and M_hat: the consensus. Q is kept for the next step (warm start: one power iteration per
// step towards the top singular subspace).
// - Left uncompressed, in one flat all-reduce (started first, so it overlaps the P/Q work):
//   1-D tensors (norms), the router, the embedding, and any matrix where (n + m) r >= n m / min_ratio
//   even at min_rank.
// - SVD refresh every refresh_every compressed steps: M itself is all-reduced (exact), and Q
//   becomes the top-r right singular vectors of the mean (guards against subspace drift).
// - Rank consensus, per matrix: each rank measures the captured energy |M_hat|^2 / |M|^2 of every
//   matrix; one tiny all-reduce averages them and every rank applies the same rule (grow r by one
//   below energy_low, shrink by one above energy_high, within [min_rank, the matrix's cap]).
//   Per matrix because layers differ: an expert's gradient is often near rank 1 while attention
//   projections need more.
// - Before start_step (the LR warm-up): one plain all-reduce of the whole group.
// Bytes are counted exactly: what this rank puts into reductions, next to what the plain
// all-reduce of the group would.
//
//   LowRankCompressor dense(cfg.compress, params, ParamGroup::dense, *ctx->data, dp);
//   dense.reduce(step);   // after backward: the group's gradients are the approximated mean
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/compress_config.h"
#include "moe/parameter_store.h"
#include "parallel/communicator.h"

namespace moe {

struct CompressStats {
    int64_t bytes_sent = 0;    // this rank's contribution to the step's reductions
    int64_t bytes_plain = 0;   // what a plain all-reduce of the same gradients would send
    double seconds = 0;
    bool compressed = false;   // false before start_step (plain all-reduce)
    bool refreshed = false;    // this step was an exact SVD refresh
    double mean_energy = 0;    // mean captured energy over the compressed matrices (compressed steps)
};

// A tensor of the compressor's state, by checkpoint name, with the shape the config fixes.
struct CompressState {
    std::string name;      // e.g. "dense/model.layers.0.self_attn.q_proj.weight/q"
    torch::Tensor value;   // the live tensor (save: copy it; load: copy into it)
};

class LowRankCompressor {
   public:
    // `divisor`: the reduced sum is divided by it (the number of data-parallel replicas).
    LowRankCompressor(const CompressConfig& cfg, ParameterStore& params, ParamGroup group, Communicator& comm,
                      double divisor);

    // After backward (all micro-batches): leaves this group's gradients equal on every rank of
    // the communicator. `step`: the 0-based training step (start_step and refreshes count from it).
    void reduce(int64_t step);

    const CompressStats& last_step() const { return stats_; }
    int64_t num_compressed() const { return int64_t(matrices_.size()); }
    // Current rank of each compressed matrix, in order.
    std::vector<int64_t> ranks() const;
    // Names of the compressed matrices, in order.
    std::vector<std::string> matrix_names() const;
    // Error buffers, Q factors (padded to each matrix's rank cap) and ranks, for checkpoints.
    std::vector<CompressState> state();
    // After a checkpoint's state was copied into state(): takes the ranks from it (checked).
    void state_loaded();

   private:
    struct Matrix {
        std::string name;
        torch::Tensor grad_BNM;    // view of the flat gradient buffer
        torch::Tensor error_BNM;   // error feedback (this rank's)
        torch::Tensor q_BMC;       // right factor, C = rank cap columns, first `rank` in use
        int64_t rank = 1, floor = 1, cap = 1;   // floor: min_rank (or min(n, m) when smaller)
        int64_t batch = 1, n = 0, m = 0;
    };

    void reduce_plain();
    void reduce_compressed(int64_t step);
    void refresh(int64_t step);
    void agree_on_ranks(const torch::Tensor& energy_K, int64_t step);
    // A fresh column for matrix k's Q (the same on every rank: seeded by seed, matrix, step).
    torch::Tensor seeded_columns(size_t k, int64_t step, int64_t first, int64_t count) const;

    CompressConfig cfg_;
    ParameterStore& params_;
    ParamGroup group_;
    Communicator& comm_;
    double divisor_;
    std::string group_name_;
    std::vector<Matrix> matrices_;
    std::vector<torch::Tensor> flat_;   // views of the uncompressed gradients
    int64_t flat_numel_ = 0;
    torch::Tensor ranks_K_;             // float32 copy of the ranks, for checkpoints
    CompressStats stats_;
};

}  // namespace moe
