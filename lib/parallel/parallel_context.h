// Everything a rank needs to take part in a parallel layout: its Mesh, its device and one
// Communicator per group. Built once at start-up; the single-process run gets groups of one.
// On a CUDA device the groups that carry tensors of the model (pipeline, data, expert,
// expert-data) are NCCL communicators, which hand CPU tensors (counts, flags) to MPI; the world
// and model-replica groups carry only such control traffic and stay MPI.
//
//   auto ctx = moe::ParallelContext::create(cfg.parallel, cfg.model.moe.num_experts, device);
//   ctx->data->all_reduce(grads);
#pragma once

#include <memory>

#include "parallel/communicator.h"
#include "parallel/mesh.h"

namespace moe {

struct ParallelContext {
    Mesh mesh;
    c10::Device device = c10::kCPU;   // where this rank's model lives (train.device)
    std::unique_ptr<Communicator> world, pipeline, data, expert, expert_data;
    // The pp x ep ranks that together hold one whole model (one pipeline of one expert group):
    // the unit of asynchrony of time-dilated SGD, whose ranks agree on every inner step.
    std::unique_ptr<Communicator> model_replica;

    bool is_root() const { return mesh.rank == 0; }

    // Under mpirun/srun: MPI world split into the mesh's groups (a layout that does not fit the
    // launched ranks is a ConfigError naming the numbers). Otherwise one process, no MPI.
    static std::shared_ptr<ParallelContext> create(const ParallelConfig& cfg, int64_t num_experts,
                                                   c10::Device device = c10::kCPU);
    // Groups of one.
    static std::shared_ptr<ParallelContext> single(int64_t num_experts, c10::Device device = c10::kCPU);
};

}  // namespace moe
