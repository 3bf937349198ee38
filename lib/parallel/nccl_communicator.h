// The Communicator of a CUDA rank: NCCL for CUDA tensors, the host (MPI) communicator it wraps for
// CPU tensors (the small control traffic: counts, flags, stop votes, strings).
//
//   auto data = moe::make_nccl_communicator(mpi_data_group, torch::Device(torch::kCUDA, 0));
//   data->all_reduce(grads_on_gpu);           // ncclAllReduce on the communicator's own stream
//
// Bootstrapped from the host group: its rank 0 makes the ncclUniqueId and broadcasts it. Every
// operation runs on the communicator's own stream, ordered after the caller's current (compute)
// stream by an event, and the compute stream waits for its end by another; tensors used on the
// NCCL stream are recorded with the caching allocator so their memory is not reused early.
// Blocking calls return when the operation is complete, and every wait polls NCCL's asynchronous
// error state and a timeout (MOE_NCCL_TIMEOUT_S, default 600): a failed or vanished peer aborts
// the communicator (ncclCommAbort) and throws a CommError naming the call, the rank and the group,
// instead of hanging the job. Point-to-point sends of CUDA tensors are staged through the host
// group: NCCL serialises a communicator's operations on one stream, so the pipeline's crossing
// sends (each stage sends before it receives) could deadlock there.
// In a build without CUDA, make_nccl_communicator throws.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "parallel/communicator.h"

namespace moe {

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, const torch::Device& device);

// "NCCL 2.28.9" (the library linked), or "" in a build without CUDA.
std::string nccl_library_version();

}  // namespace moe
