#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <deque>

#include "common/error.h"

namespace moe {

namespace {

// The compute action with the communication the contract puts around it on stage s of P.
void add_forward(StageSchedule& out, int s, int P, int i) {
    if (s > 0) out.push_back({PipeOp::recv_activation, i});
    out.push_back({PipeOp::forward, i});
    if (s < P - 1) out.push_back({PipeOp::send_activation, i});
}

void add_backward(StageSchedule& out, int s, int P, int i) {
    if (s < P - 1) out.push_back({PipeOp::recv_grad, i});
    out.push_back({PipeOp::backward, i});
    if (s > 0) out.push_back({PipeOp::send_grad, i});
}

std::string where(int s, size_t k, const PipeAction& a) {
    return fmt::format("stage {}, action {} ({}), micro-batch {}: ", s, k, to_string(a), a.micro_batch);
}

std::string validate_stage(const PipelineSchedule& sched, int s) {
    const StageSchedule& acts = sched.per_stage[size_t(s)];
    const int m = sched.micro_batches;
    const bool first = s == 0, last = s == sched.stages - 1;
    auto at = [&](size_t k, PipeOp op, int i) { return k < acts.size() && acts[k] == PipeAction{op, i}; };
    auto before = [&](size_t k, PipeOp op, int i) { return k > 0 && at(k - 1, op, i); };
    std::vector<long> forward_at(size_t(m), -1), backward_at(size_t(m), -1);
    for (size_t k = 0; k < acts.size(); ++k) {
        const PipeAction& a = acts[k];
        const int i = a.micro_batch;
        const std::string here = where(s, k, a);
        if (i < 0 || i >= m) return here + fmt::format("micro-batch out of range [0, {})", m);
        switch (a.op) {
            case PipeOp::forward:
                if (forward_at[size_t(i)] >= 0)
                    return here + fmt::format("second forward (first at action {})", forward_at[size_t(i)]);
                forward_at[size_t(i)] = long(k);
                if (!first && !before(k, PipeOp::recv_activation, i)) return here + "forward not right after its recvA";
                if (!last && !at(k + 1, PipeOp::send_activation, i)) return here + "forward not right before its sendA";
                break;
            case PipeOp::backward:
                if (backward_at[size_t(i)] >= 0)
                    return here + fmt::format("second backward (first at action {})", backward_at[size_t(i)]);
                if (forward_at[size_t(i)] < 0) return here + "backward before its forward";
                backward_at[size_t(i)] = long(k);
                if (!last && !before(k, PipeOp::recv_grad, i)) return here + "backward not right after its recvG";
                if (!first && !at(k + 1, PipeOp::send_grad, i)) return here + "backward not right before its sendG";
                break;
            case PipeOp::recv_activation:
                if (first) return here + "stage 0 receives no activations (it embeds the tokens)";
                if (!at(k + 1, PipeOp::forward, i)) return here + "recvA not right before its forward";
                break;
            case PipeOp::send_activation:
                if (last) return here + "the last stage sends no activations (it computes the loss)";
                if (!before(k, PipeOp::forward, i)) return here + "sendA not right after its forward";
                break;
            case PipeOp::recv_grad:
                if (last) return here + "the last stage receives no gradients (its backward starts from the loss)";
                if (!at(k + 1, PipeOp::backward, i)) return here + "recvG not right before its backward";
                break;
            case PipeOp::send_grad:
                if (first) return here + "stage 0 sends no gradients (there is no stage before it)";
                if (!before(k, PipeOp::backward, i)) return here + "sendG not right after its backward";
                break;
        }
    }
    for (int i = 0; i < m; ++i) {
        if (forward_at[size_t(i)] < 0) return fmt::format("stage {}, micro-batch {}: no forward", s, i);
        if (backward_at[size_t(i)] < 0) return fmt::format("stage {}, micro-batch {}: no backward", s, i);
    }
    return "";
}

std::string check_shape(const PipelineSchedule& sched) {
    if (sched.stages < 1 || sched.micro_batches < 1)
        return fmt::format("schedule '{}': stages = {} and micro_batches = {} must both be >= 1", sched.name,
                           sched.stages, sched.micro_batches);
    if (sched.per_stage.size() != size_t(sched.stages))
        return fmt::format("schedule '{}': {} stages but {} stage lists", sched.name, sched.stages,
                           sched.per_stage.size());
    return "";
}

struct Message {
    int micro_batch;
    double sent_at;  // simulated time the send happened (communication itself costs nothing)
};

struct Simulation {
    std::string error;          // empty when every stage ran to its end
    std::vector<double> busy;   // compute time per stage
    double makespan = 0;
};

// One event simulation serves both simulate_schedule and simulated_bubble. Each message carries
// its send time, so the times come out the same whatever order the stages are advanced in.
Simulation simulate(const PipelineSchedule& sched, double forward_cost, double backward_cost) {
    Simulation sim;
    sim.error = check_shape(sched);
    if (!sim.error.empty()) return sim;
    const int P = sched.stages;
    // to_next[s]: activations from s to s+1; to_prev[s]: gradients from s to s-1.
    std::vector<std::deque<Message>> to_next(static_cast<size_t>(P)), to_prev(static_cast<size_t>(P));
    std::vector<size_t> pc(size_t(P), 0);
    std::vector<double> clock(size_t(P), 0.0);
    sim.busy.assign(size_t(P), 0.0);

    // The FIFO stage s's receive reads from, or nullptr when that neighbour does not exist.
    auto inbox = [&](int s, PipeOp op) -> std::deque<Message>* {
        if (op == PipeOp::recv_activation) return s > 0 ? &to_next[size_t(s - 1)] : nullptr;
        return s < P - 1 ? &to_prev[size_t(s + 1)] : nullptr;
    };

    for (bool progressed = true; progressed;) {
        progressed = false;
        for (int s = 0; s < P; ++s) {
            const StageSchedule& acts = sched.per_stage[size_t(s)];
            for (size_t& k = pc[size_t(s)]; k < acts.size(); ++k) {
                const PipeAction& a = acts[k];
                double& t = clock[size_t(s)];
                if (a.op == PipeOp::forward || a.op == PipeOp::backward) {
                    const double cost = a.op == PipeOp::forward ? forward_cost : backward_cost;
                    t += cost;
                    sim.busy[size_t(s)] += cost;
                } else if (a.op == PipeOp::send_activation || a.op == PipeOp::send_grad) {
                    const int dst = a.op == PipeOp::send_activation ? s + 1 : s - 1;
                    if (dst < 0 || dst >= P) {
                        sim.error = where(s, k, a) + fmt::format("sends to stage {}, which does not exist", dst);
                        return sim;
                    }
                    (a.op == PipeOp::send_activation ? to_next : to_prev)[size_t(s)].push_back({a.micro_batch, t});
                } else {
                    std::deque<Message>* box = inbox(s, a.op);
                    if (box == nullptr || box->empty()) break;  // blocked; maybe a later pass
                    // FIFOs only grow at the back, so a wrong head can never become right.
                    if (box->front().micro_batch != a.micro_batch) {
                        sim.error = where(s, k, a) + fmt::format("the next message from stage {} is for micro-batch {}",
                                                                 a.op == PipeOp::recv_activation ? s - 1 : s + 1,
                                                                 box->front().micro_batch);
                        return sim;
                    }
                    t = std::max(t, box->front().sent_at);
                    box->pop_front();
                }
                progressed = true;
            }
        }
    }

    std::vector<std::string> stuck;
    for (int s = 0; s < P; ++s) {
        const StageSchedule& acts = sched.per_stage[size_t(s)];
        const size_t k = pc[size_t(s)];
        if (k == acts.size()) continue;
        const int from = acts[k].op == PipeOp::recv_activation ? s - 1 : s + 1;
        stuck.push_back(fmt::format("stage {} waits at action {} ({}) for stage {}", s, k, to_string(acts[k]),
                                    from < 0 || from >= P ? "<none>" : std::to_string(from)));
    }
    if (!stuck.empty()) {
        sim.error = fmt::format("deadlock in schedule '{}': {}", sched.name, fmt::join(stuck, "; "));
        return sim;
    }
    for (int s = 0; s < P; ++s) {
        if (!to_next[size_t(s)].empty())
            sim.error = fmt::format("stage {} never receives the activation of micro-batch {} sent by stage {}", s + 1,
                                    to_next[size_t(s)].front().micro_batch, s);
        else if (!to_prev[size_t(s)].empty())
            sim.error = fmt::format("stage {} never receives the gradient of micro-batch {} sent by stage {}", s - 1,
                                    to_prev[size_t(s)].front().micro_batch, s);
        if (!sim.error.empty()) return sim;
    }
    sim.makespan = *std::max_element(clock.begin(), clock.end());
    return sim;
}

}  // namespace

PipelineSchedule make_schedule(ScheduleKind kind, int stages, int micro_batches) {
    if (stages < 1 || micro_batches < 1)
        throw ConfigError(fmt::format("pipeline schedule {}: stages = {} and micro_batches = {} must both be >= 1",
                                      to_string(kind), stages, micro_batches));
    const int P = stages, m = micro_batches;
    PipelineSchedule sched{to_string(kind), P, m, std::vector<StageSchedule>(size_t(P))};
    for (int s = 0; s < P; ++s) {
        StageSchedule& out = sched.per_stage[size_t(s)];
        if (kind == ScheduleKind::gpipe) {
            for (int i = 0; i < m; ++i) add_forward(out, s, P, i);
            for (int i = 0; i < m; ++i) add_backward(out, s, P, i);
            continue;
        }
        // Stage s must run P-s-1 forwards ahead before the first gradient can come back to it.
        const int warmup = std::min(P - s - 1, m);
        for (int i = 0; i < warmup; ++i) add_forward(out, s, P, i);
        for (int i = warmup; i < m; ++i) {  // steady state: forward i, backward i - warmup
            add_forward(out, s, P, i);
            add_backward(out, s, P, i - warmup);
        }
        for (int i = m - warmup; i < m; ++i) add_backward(out, s, P, i);  // cool-down
    }
    return sched;
}

std::string to_string(const PipeAction& a) {
    const char* op = "";
    switch (a.op) {
        case PipeOp::recv_activation: op = "recvA"; break;
        case PipeOp::forward: op = "F"; break;
        case PipeOp::send_activation: op = "sendA"; break;
        case PipeOp::recv_grad: op = "recvG"; break;
        case PipeOp::backward: op = "B"; break;
        case PipeOp::send_grad: op = "sendG"; break;
    }
    return fmt::format("{}{}", op, a.micro_batch);
}

std::string to_string(ScheduleKind kind) { return kind == ScheduleKind::gpipe ? "gpipe" : "1f1b"; }

ScheduleKind parse_schedule_kind(const std::string& name) {
    if (name == "gpipe") return ScheduleKind::gpipe;
    if (name == "1f1b") return ScheduleKind::one_f_one_b;
    throw ConfigError(fmt::format("unknown pipeline schedule '{}' (choices: gpipe, 1f1b)", name));
}

std::string validate_schedule(const PipelineSchedule& sched) {
    std::string error = check_shape(sched);
    for (int s = 0; error.empty() && s < sched.stages; ++s) error = validate_stage(sched, s);
    return error;
}

std::vector<int> peak_live_activations(const PipelineSchedule& sched) {
    std::vector<int> peak;
    for (const StageSchedule& acts : sched.per_stage) {
        int live = 0, most = 0;
        for (const PipeAction& a : acts) {
            if (a.op == PipeOp::forward) most = std::max(most, ++live);
            if (a.op == PipeOp::backward) --live;
        }
        peak.push_back(most);
    }
    return peak;
}

std::string simulate_schedule(const PipelineSchedule& sched) { return simulate(sched, 1.0, 1.0).error; }

std::vector<double> simulated_bubble(const PipelineSchedule& sched, double forward_cost, double backward_cost) {
    if (!(forward_cost > 0) || !(backward_cost > 0))
        throw ConfigError(fmt::format("simulated_bubble: forward_cost = {} and backward_cost = {} must both be > 0",
                                      forward_cost, backward_cost));
    const Simulation sim = simulate(sched, forward_cost, backward_cost);
    if (!sim.error.empty()) throw Error("simulated_bubble: " + sim.error);
    std::vector<double> idle;
    // An empty schedule takes no time and so wastes none.
    for (double busy : sim.busy) idle.push_back(sim.makespan > 0 ? 1.0 - busy / sim.makespan : 0.0);
    return idle;
}

}  // namespace moe
