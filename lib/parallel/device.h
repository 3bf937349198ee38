// Where a rank computes: the CPU, or the CUDA device picked by its local rank.
//
//   moe::init_cuda_backend();                       // first thing in main(), before other torch calls
//   c10::Device d = moe::select_device(moe::DeviceKind::auto_detect, "train.device (x.yaml)");
//
// A CUDA build (-DMOE_WITH_CUDA=ON) links c10_cuda, the CUDA runtime and NCCL, but not libtorch's
// CUDA kernels (libtorch_cuda.so and the ~2 GB of cuDNN, cuBLAS, cuSPARSELt, NVSHMEM ... it
// needs): those are loaded with dlopen only when a GPU is visible. So the one binary runs the CPU
// suite on a machine without a GPU, or without those libraries, at the CPU build's start-up cost.
// libtorch decides once per process whether CUDA is present (at::detail::getCUDAHooks caches the
// answer), hence "before any other torch call asks about CUDA".
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace moe {

enum class DeviceKind { auto_detect, cpu, cuda };   // train.device

// True in a CUDA build.
bool built_with_cuda();

// In a CUDA build with a visible GPU: loads libtorch's CUDA backend (once). Returns the number of
// visible CUDA devices (0 without a GPU, or in a CPU build); never throws: why CUDA is missing is
// kept for select_device's message.
int init_cuda_backend();

// The launcher's index of this process among the ranks on its host (OMPI_COMM_WORLD_LOCAL_RANK,
// SLURM_LOCALID, ...; 0 outside a launcher).
int64_t local_rank();

// cpu; cuda: cuda:<local rank % visible devices>, and an Error naming `key` when this build or this
// machine cannot (no CUDA build, no device, backend not loadable); auto: cuda where it can, else cpu.
// Also makes the chosen device current for the calling thread.
c10::Device select_device(DeviceKind request, const std::string& key);

// "cpu" or "cuda:0 (NVIDIA H200, 139.8 GiB, sm_90)": for logs and run records.
std::string describe_device(const c10::Device& device);

// The device's peak dense bf16 tensor throughput in FLOP/s, from its compute capability and
// clocks (0 when unknown, e.g. on the CPU): the denominator of MFU.
double peak_bf16_flops(const c10::Device& device);

}  // namespace moe
