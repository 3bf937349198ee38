// Pipeline schedules as plain data: for each of P stages, the ordered list of what that stage's
// rank does with the m micro-batches of a step (receive, compute, send). The executor walks its
// stage's list and issues the matching op; nothing here touches torch or MPI, so the order of
// operations -- where pipeline hangs come from -- is checked by unit tests, not by a stuck job.
//
// Two schedules: GPipe (every forward, then every backward; a stage holds all m micro-batches'
// activations) and 1F1B / PipeDream-Flush as in Megatron-LM (a few warm-up forwards, then one
// forward and one backward alternately; a stage holds at most P - s). Both have the same bubble
// when forward and backward cost the same; 1F1B just needs far less activation memory.
//
// Besides the builder, the checks the executor can assert on: validate_schedule (per-stage rules),
// simulate_schedule (the stages together: blocking receives, FIFO messages, finds deadlocks) and
// two measures, peak_live_activations and simulated_bubble.
//
//   PipelineSchedule sched = make_schedule(ScheduleKind::one_f_one_b, /*stages=*/4, /*micro_batches=*/8);
//   MOE_CHECK(simulate_schedule(sched).empty(), "{}", simulate_schedule(sched));
//   for (const PipeAction& a : sched.per_stage[stage])
//       switch (a.op) { case PipeOp::recv_activation: ...; case PipeOp::forward: ...; ... }
#pragma once

#include <string>
#include <vector>

namespace moe {

enum class PipeOp { recv_activation, forward, send_activation, recv_grad, backward, send_grad };

struct PipeAction {
    PipeOp op;
    int micro_batch;
    bool operator==(const PipeAction& o) const { return op == o.op && micro_batch == o.micro_batch; }
    bool operator!=(const PipeAction& o) const { return !(*this == o); }
};

using StageSchedule = std::vector<PipeAction>;

struct PipelineSchedule {
    std::string name;  // "gpipe" / "1f1b", or anything for a hand-built schedule
    int stages = 1;
    int micro_batches = 1;
    std::vector<StageSchedule> per_stage;  // per_stage[s] is what stage s's rank does, in order
};

enum class ScheduleKind { gpipe, one_f_one_b };

// The executor's contract, for every stage s of P and micro-batch i:
//   s > 0:    recv_activation(i) immediately before forward(i)   (stage 0 embeds tokens)
//   s < P-1:  send_activation(i) immediately after forward(i)    (the last stage computes the loss)
//   s < P-1:  recv_grad(i) immediately before backward(i)        (the last stage starts from its loss)
//   s > 0:    send_grad(i) immediately after backward(i)
// GPipe: forwards 0..m-1, then backwards 0..m-1 (same order as 1F1B, so messages arrive in the
// same order under both). 1F1B: min(P-s-1, m) warm-up forwards, then forward/backward pairs
// (forward first), then the remaining backwards; backwards in order 0..m-1.
// Throws ConfigError when stages < 1 or micro_batches < 1.
PipelineSchedule make_schedule(ScheduleKind kind, int stages, int micro_batches);

std::string to_string(const PipeAction& a);  // "F3", "B3", "recvA3", "sendA3", "recvG3", "sendG3"
std::string to_string(ScheduleKind kind);    // "gpipe", "1f1b"
ScheduleKind parse_schedule_kind(const std::string& name);  // inverse of to_string; else ConfigError

// Empty when the schedule keeps the contract above, each forward(i) and backward(i) appears
// exactly once per stage (forward first) and every micro-batch index is in [0, m); otherwise the
// first problem found, naming the stage, the action index and the micro-batch.
std::string validate_schedule(const PipelineSchedule& sched);

// Per stage, the most micro-batches whose activations it holds at once (forwards done minus
// backwards done): the activation memory a schedule needs, in micro-batches.
std::vector<int> peak_live_activations(const PipelineSchedule& sched);

// Runs all stages together: sends never block (they land in a FIFO per sender, receiver and
// kind); a receive blocks until a message from its neighbour is at the head of that FIFO, and
// that message must be for the same micro-batch. Empty when every stage reaches its end with no
// message left unreceived; otherwise the deadlock (each stuck stage and the receive it waits in),
// the mismatch (which micro-batch arrived instead) or the send with no neighbour to go to.
std::string simulate_schedule(const PipelineSchedule& sched);

// The idle fraction of each stage over the whole step (the pipeline bubble) in a model where a
// forward costs `forward_cost`, a backward `backward_cost` and communication nothing: the same
// event simulation, an action starting once its stage is free and its input has arrived.
// Throws ConfigError for non-positive costs and moe::Error if simulate_schedule would report a problem.
std::vector<double> simulated_bubble(const PipelineSchedule& sched, double forward_cost = 1.0,
                                     double backward_cost = 2.0);

}  // namespace moe
