#include "parallel/parallel_context.h"

#include <cstdlib>

#include "common/error.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

namespace moe {

std::shared_ptr<ParallelContext> ParallelContext::single(int64_t num_experts, c10::Device device) {
    auto ctx = std::make_shared<ParallelContext>();
    ctx->mesh = Mesh::build(1, 0, ParallelConfig{}, num_experts);
    ctx->device = device;
    ctx->world = make_self_communicator("world");
    ctx->pipeline = make_self_communicator("pipeline");
    ctx->data = make_self_communicator("data");
    ctx->expert = make_self_communicator("expert");
    ctx->expert_data = make_self_communicator("expert-data");
    ctx->model_replica = make_self_communicator("model-replica");
    return ctx;
}

std::shared_ptr<ParallelContext> ParallelContext::create(const ParallelConfig& cfg, int64_t num_experts,
                                                         c10::Device device) {
    if (!launched_by_mpi()) {
        if (cfg.pp * cfg.dp > 1)
            throw ConfigError(fmt::format("parallel: pp x dp = {} ranks, but this process was not started by mpirun or "
                                          "srun (run: mpirun -np {} moe-train ...)", cfg.pp * cfg.dp, cfg.pp * cfg.dp));
        return single(num_experts, device);
    }
    auto ctx = std::make_shared<ParallelContext>();
    ctx->device = device;
    ctx->world = make_mpi_world();
    // Started by srun (not by mpirun, whose daemons SLURM counts as its tasks), the world must be
    // the allocation's tasks: otherwise some other layout than the one asked for would train.
    const char* ntasks = std::getenv("SLURM_NTASKS");
    if (ntasks && std::getenv("SLURM_PROCID") && !std::getenv("OMPI_COMM_WORLD_SIZE")) {
        char* end = nullptr;
        const long n = std::strtol(ntasks, &end, 10);
        if (end != ntasks && *end == '\0' && n != ctx->world->size())
            throw ConfigError(fmt::format("parallel: the MPI world has {} ranks but the SLURM step has SLURM_NTASKS={}",
                                          ctx->world->size(), n));
    }
    const Mesh m = Mesh::build(ctx->world->size(), ctx->world->rank(), cfg, num_experts);
    ctx->mesh = m;
    // Colors identify a group uniquely; keys order its members by their index in the group.
    ctx->pipeline = ctx->world->split(int(m.replica), int(m.stage), "pipeline");
    ctx->data = ctx->world->split(int(m.stage), int(m.replica), "data");
    ctx->expert = ctx->world->split(int(m.stage * m.dp + m.replica / m.ep), int(m.expert_rank), "expert");
    ctx->expert_data = ctx->world->split(int(m.stage * m.ep + m.expert_rank), int(m.replica), "expert-data");
    ctx->model_replica = ctx->world->split(int(m.replica / m.ep), int(m.expert_rank * m.pp + m.stage), "model-replica");
    if (device.is_cuda()) {
        for (auto* group : {&ctx->pipeline, &ctx->data, &ctx->expert, &ctx->expert_data})
            *group = make_nccl_communicator(std::move(*group), device);
    }
    return ctx;
}

}  // namespace moe
