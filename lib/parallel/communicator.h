// Collective and point-to-point communication over contiguous tensors, behind one interface so
// the trainer does not care whether MPI (CPU tensors, lib/parallel/mpi_communicator.h), NCCL
// (CUDA tensors, later) or nothing at all (one process) is underneath.
//
//   std::unique_ptr<Communicator> world = moe::make_mpi_world();     // or make_self_communicator()
//   world->all_reduce(grads);                                         // in place, sum
//   auto data = world->split(/*color=*/stage, /*key=*/replica, "data");
//
// Every implementation checks every call; a failure throws CommError naming the call, the rank
// and the group.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe {

enum class ReduceOp { sum, max, min };

// A non-blocking operation in flight; wait() completes it (and rethrows its failure).
class CommRequest {
   public:
    virtual ~CommRequest() = default;
    virtual void wait() = 0;
    // True once complete. Also moves the operation along: MPI libraries progress non-blocking
    // collectives only inside MPI calls, so overlapping work polls its requests.
    virtual bool test() = 0;
};

class Communicator {
   public:
    virtual ~Communicator() = default;

    virtual int rank() const = 0;
    virtual int size() const = 0;
    // The group's name for messages: "world", "data", "expert", ...
    virtual const std::string& name() const = 0;

    // In place over a contiguous tensor.
    virtual void all_reduce(torch::Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
    // Starts an in-place all-reduce; `t` must stay alive and untouched until wait().
    virtual std::unique_ptr<CommRequest> all_reduce_async(torch::Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
    // Rows (slices along dim 0) send_counts[r] of `send` go to rank r, in rank order; recv_counts[r]
    // rows arrive from rank r into `recv` (preallocated, rows of the same size).
    virtual void all_to_all(const torch::Tensor& send, const std::vector<int64_t>& send_counts, torch::Tensor& recv,
                            const std::vector<int64_t>& recv_counts) = 0;
    virtual void send(const torch::Tensor& t, int dst, int tag) = 0;
    // Starts a send; `t` must stay alive and untouched until wait(). (Pipeline stages send without
    // blocking so that neighbours exchanging in both directions cannot wait on each other.)
    virtual std::unique_ptr<CommRequest> send_async(const torch::Tensor& t, int dst, int tag) = 0;
    virtual void recv(torch::Tensor& t, int src, int tag) = 0;
    virtual void broadcast(torch::Tensor& t, int root) = 0;
    // Every rank's `t` stacked along a new dim 0, in rank order.
    virtual torch::Tensor all_gather(const torch::Tensor& t) = 0;
    virtual void barrier() = 0;
    // Ranks with the same color form a new group, ordered by key (then by rank).
    virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;
};

// `value` of rank `root`, on every rank of `comm`.
std::string broadcast_string(Communicator& comm, const std::string& value, int root);

// Ranks of this job on this host, as the launcher reports it (1 outside mpirun/srun).
int64_t ranks_on_this_host();

// The group of one process: collectives are copies or no-ops. The single-process path.
std::unique_ptr<Communicator> make_self_communicator(const std::string& name = "world");

}  // namespace moe
