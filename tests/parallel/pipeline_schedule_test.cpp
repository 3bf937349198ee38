// Pipeline schedules (lib/parallel/pipeline_schedule.cpp): the builders keep the executor's
// contract for every small P and m, the checks catch broken hand-built schedules, and the
// simulated bubble matches the textbook (P-1)/(m+P-1).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <string>
#include <vector>

#include "common/error.h"
#include "parallel/pipeline_schedule.h"

using namespace moe;

namespace {

const ScheduleKind kinds[] = {ScheduleKind::gpipe, ScheduleKind::one_f_one_b};

std::string join(const StageSchedule& acts) {
    std::string out;
    for (const PipeAction& a : acts) out += (out.empty() ? "" : " ") + to_string(a);
    return out;
}

// Micro-batch indices of the actions of one kind, in order.
std::vector<int> sequence(const StageSchedule& acts, PipeOp op) {
    std::vector<int> out;
    for (const PipeAction& a : acts)
        if (a.op == op) out.push_back(a.micro_batch);
    return out;
}

std::vector<int> iota(int m) {
    std::vector<int> out(static_cast<size_t>(m));
    for (int i = 0; i < m; ++i) out[size_t(i)] = i;
    return out;
}

// Parses "F0 sendA0 recvG0 B0" back into actions, for hand-built schedules.
StageSchedule parse(const std::string& text) {
    StageSchedule out;
    size_t at = 0;
    while (at < text.size()) {
        size_t end = text.find(' ', at);
        if (end == std::string::npos) end = text.size();
        const std::string word = text.substr(at, end - at);
        const size_t digit = word.find_first_of("0123456789");
        const std::string op = word.substr(0, digit);
        const int i = std::stoi(word.substr(digit));
        const PipeOp ops[] = {PipeOp::recv_activation, PipeOp::forward,  PipeOp::send_activation,
                              PipeOp::recv_grad,       PipeOp::backward, PipeOp::send_grad};
        bool found = false;
        for (PipeOp o : ops)
            if (to_string(PipeAction{o, 0}) == op + "0") out.push_back({o, i}), found = true;
        REQUIRE_MESSAGE(found, "bad action ", word);
        at = end + 1;
    }
    return out;
}

PipelineSchedule hand_built(int m, std::vector<std::string> stages) {
    PipelineSchedule sched{"hand", int(stages.size()), m, {}};
    for (const std::string& s : stages) sched.per_stage.push_back(parse(s));
    return sched;
}

}  // namespace

TEST_CASE("both kinds, P in 1..5, m in 1..9: valid, deadlock-free, matched sends and receives") {
    for (ScheduleKind kind : kinds)
        for (int P = 1; P <= 5; ++P)
            for (int m = 1; m <= 9; ++m) {
                CAPTURE(to_string(kind));
                CAPTURE(P);
                CAPTURE(m);
                const PipelineSchedule sched = make_schedule(kind, P, m);
                REQUIRE(sched.per_stage.size() == size_t(P));
                CHECK(sched.name == to_string(kind));
                CHECK(validate_schedule(sched) == "");
                CHECK(simulate_schedule(sched) == "");
                for (int s = 0; s < P; ++s) {
                    CAPTURE(s);
                    const StageSchedule& acts = sched.per_stage[size_t(s)];
                    // Every micro-batch forwarded before its backward.
                    for (int i = 0; i < m; ++i) {
                        auto f = std::find(acts.begin(), acts.end(), PipeAction{PipeOp::forward, i});
                        auto b = std::find(acts.begin(), acts.end(), PipeAction{PipeOp::backward, i});
                        CHECK(f < b);
                    }
                    // Both kinds run forwards and backwards in micro-batch order.
                    CHECK(sequence(acts, PipeOp::forward) == iota(m));
                    CHECK(sequence(acts, PipeOp::backward) == iota(m));
                    if (s + 1 < P) {
                        const StageSchedule& next = sched.per_stage[size_t(s + 1)];
                        CHECK(sequence(acts, PipeOp::send_activation) == sequence(next, PipeOp::recv_activation));
                        CHECK(sequence(next, PipeOp::send_grad) == sequence(acts, PipeOp::recv_grad));
                    }
                }
                CHECK(sequence(sched.per_stage[0], PipeOp::recv_activation).empty());
                CHECK(sequence(sched.per_stage[0], PipeOp::send_grad).empty());
                CHECK(sequence(sched.per_stage[size_t(P - 1)], PipeOp::send_activation).empty());
                CHECK(sequence(sched.per_stage[size_t(P - 1)], PipeOp::recv_grad).empty());

                const std::vector<int> peak = peak_live_activations(sched);
                REQUIRE(peak.size() == size_t(P));
                for (int s = 0; s < P; ++s) {
                    if (kind == ScheduleKind::gpipe) {
                        CHECK(peak[size_t(s)] == m);
                    } else {
                        CHECK(peak[size_t(s)] <= P);
                        CHECK(peak[size_t(s)] == std::min(P - s, m));
                    }
                }
            }
}

TEST_CASE("1F1B, P=2, m=4: written out by hand") {
    const PipelineSchedule sched = make_schedule(ScheduleKind::one_f_one_b, 2, 4);
    // Stage 0: one warm-up forward, then F,B pairs, then the last backward.
    CHECK(join(sched.per_stage[0]) ==
          "F0 sendA0 "
          "F1 sendA1 recvG0 B0 "
          "F2 sendA2 recvG1 B1 "
          "F3 sendA3 recvG2 B2 "
          "recvG3 B3");
    // Stage 1 (last): no warm-up, F,B pairs straight away.
    CHECK(join(sched.per_stage[1]) ==
          "recvA0 F0 B0 sendG0 "
          "recvA1 F1 B1 sendG1 "
          "recvA2 F2 B2 sendG2 "
          "recvA3 F3 B3 sendG3");
}

TEST_CASE("1F1B with fewer micro-batches than stages is all warm-up and cool-down") {
    const PipelineSchedule sched = make_schedule(ScheduleKind::one_f_one_b, 4, 2);
    CHECK(join(sched.per_stage[0]) == "F0 sendA0 F1 sendA1 recvG0 B0 recvG1 B1");
    CHECK(join(sched.per_stage[2]) == "recvA0 F0 sendA0 recvA1 F1 sendA1 recvG0 B0 sendG0 recvG1 B1 sendG1");
    CHECK(join(sched.per_stage[3]) == "recvA0 F0 B0 sendG0 recvA1 F1 B1 sendG1");
}

TEST_CASE("GPipe and one stage") {
    CHECK(join(make_schedule(ScheduleKind::gpipe, 2, 2).per_stage[0]) == "F0 sendA0 F1 sendA1 recvG0 B0 recvG1 B1");
    CHECK(join(make_schedule(ScheduleKind::gpipe, 2, 2).per_stage[1]) == "recvA0 F0 recvA1 F1 B0 sendG0 B1 sendG1");
    CHECK(join(make_schedule(ScheduleKind::gpipe, 1, 3).per_stage[0]) == "F0 F1 F2 B0 B1 B2");
    CHECK(join(make_schedule(ScheduleKind::one_f_one_b, 1, 3).per_stage[0]) == "F0 B0 F1 B1 F2 B2");
}

TEST_CASE("validate_schedule: backward before its forward") {
    const PipelineSchedule sched = hand_built(1, {"F0 sendA0 recvG0 B0", "B0 sendG0 recvA0 F0"});
    const std::string error = validate_schedule(sched);
    CHECK(error.find("stage 1") != std::string::npos);
    CHECK(error.find("backward before its forward") != std::string::npos);
}

TEST_CASE("validate_schedule: a missing send is reported, and simulate sees the wrong micro-batch arrive") {
    PipelineSchedule sched = make_schedule(ScheduleKind::one_f_one_b, 2, 4);
    auto& acts = sched.per_stage[0];
    acts.erase(std::find(acts.begin(), acts.end(), PipeAction{PipeOp::send_activation, 2}));
    const std::string error = validate_schedule(sched);
    CHECK(error.find("stage 0") != std::string::npos);
    CHECK(error.find("F2") != std::string::npos);
    const std::string sim = simulate_schedule(sched);
    CHECK(sim.find("stage 1") != std::string::npos);
    CHECK(sim.find("micro-batch 3") != std::string::npos);  // A3 arrives where A2 was expected
}

TEST_CASE("validate_schedule: forbidden communication, bad indices, duplicates, missing actions") {
    // Stage 0 receiving an activation / the last stage sending one.
    CHECK(validate_schedule(hand_built(1, {"recvA0 F0 B0"})).find("stage 0") != std::string::npos);
    CHECK(validate_schedule(hand_built(1, {"F0 sendA0 B0"})).find("last stage") != std::string::npos);
    CHECK(validate_schedule(hand_built(1, {"F0 B0 sendG0"})).find("stage 0 sends no gradients") != std::string::npos);
    CHECK(validate_schedule(hand_built(2, {"F0 F2 B0 B1"})).find("out of range") != std::string::npos);
    CHECK(validate_schedule(hand_built(1, {"F0 F0 B0"})).find("second forward") != std::string::npos);
    CHECK(validate_schedule(hand_built(2, {"F0 B0 F1"})).find("micro-batch 1: no backward") != std::string::npos);
    const PipelineSchedule no_recv = hand_built(1, {"F0 sendA0 recvG0 B0", "F0 B0"});
    CHECK(validate_schedule(no_recv).find("stage 1, action 0") != std::string::npos);
    PipelineSchedule short_list = make_schedule(ScheduleKind::gpipe, 3, 2);
    short_list.per_stage.pop_back();
    CHECK(validate_schedule(short_list).find("3 stages but 2 stage lists") != std::string::npos);
}

TEST_CASE("simulate_schedule: both stages receive before they send") {
    const PipelineSchedule sched = hand_built(1, {"recvG0 B0 F0 sendA0", "recvA0 F0 B0 sendG0"});
    const std::string error = simulate_schedule(sched);
    CHECK(error.find("deadlock") != std::string::npos);
    CHECK(error.find("stage 0 waits at action 0 (recvG0)") != std::string::npos);
    CHECK(error.find("stage 1 waits at action 0 (recvA0)") != std::string::npos);
}

TEST_CASE("simulate_schedule: a deadlock that every stage's own rules allow") {
    // Stage 0 runs 1F1B as if it were the last stage; stage 1 runs GPipe: stage 0 waits for G0
    // while stage 1 waits for A1, which stage 0 only sends after B0.
    const PipelineSchedule sched = hand_built(2, {"F0 sendA0 recvG0 B0 F1 sendA1 recvG1 B1",
                                                  "recvA0 F0 recvA1 F1 B0 sendG0 B1 sendG1"});
    CHECK(validate_schedule(sched) == "");
    const std::string error = simulate_schedule(sched);
    CHECK(error.find("stage 0 waits at action 2 (recvG0) for stage 1") != std::string::npos);
    CHECK(error.find("stage 1 waits at action 2 (recvA1) for stage 0") != std::string::npos);
}

TEST_CASE("simulate_schedule: gradients in the wrong order, and a message nobody receives") {
    const PipelineSchedule reversed = hand_built(2, {"F0 sendA0 F1 sendA1 recvG1 B1 recvG0 B0",
                                                     "recvA0 F0 recvA1 F1 B0 sendG0 B1 sendG1"});
    CHECK(validate_schedule(reversed) == "");
    CHECK(simulate_schedule(reversed).find("stage 0, action 4 (recvG1)") != std::string::npos);
    CHECK(simulate_schedule(reversed).find("is for micro-batch 0") != std::string::npos);

    const std::string left = simulate_schedule(hand_built(1, {"F0 sendA0", ""}));
    CHECK(left.find("stage 1 never receives the activation of micro-batch 0") != std::string::npos);
}

TEST_CASE("simulated_bubble with equal forward and backward cost is (P-1)/(m+P-1)") {
    const std::pair<int, int> cases[] = {{2, 2}, {2, 4}, {2, 8}, {4, 8}};
    for (ScheduleKind kind : kinds)
        for (const auto& c : cases) {
            const int P = c.first, m = c.second;
            CAPTURE(to_string(kind));
            CAPTURE(P);
            CAPTURE(m);
            const std::vector<double> bubble = simulated_bubble(make_schedule(kind, P, m), 1.0, 1.0);
            REQUIRE(bubble.size() == size_t(P));
            CHECK(std::abs(bubble[0] - double(P - 1) / (m + P - 1)) < 1e-9);
        }
}

TEST_CASE("simulated_bubble: with uniform stages every stage idles (P-1)/(m+P-1), whatever F and B cost") {
    // Both schedules then take (m+P-1)(F+B) and each stage computes m(F+B); 1F1B saves memory, not time.
    for (ScheduleKind kind : kinds)
        for (int P = 1; P <= 5; ++P)
            for (int m = 1; m <= 9; ++m)
                for (double backward_cost : {1.0, 2.0, 0.5}) {
                    CAPTURE(to_string(kind));
                    CAPTURE(P);
                    CAPTURE(m);
                    CAPTURE(backward_cost);
                    for (double idle : simulated_bubble(make_schedule(kind, P, m), 1.0, backward_cost))
                        CHECK(std::abs(idle - double(P - 1) / (m + P - 1)) < 1e-9);
                }
}

TEST_CASE("bad arguments throw ConfigError naming the numbers") {
    for (ScheduleKind kind : kinds) {
        CHECK_THROWS_WITH_AS(make_schedule(kind, 0, 4), doctest::Contains("stages = 0"), ConfigError);
        CHECK_THROWS_WITH_AS(make_schedule(kind, 2, 0), doctest::Contains("micro_batches = 0"), ConfigError);
        CHECK_THROWS_WITH_AS(make_schedule(kind, -1, -3), doctest::Contains("stages = -1 and micro_batches = -3"),
                             ConfigError);
    }
    CHECK(parse_schedule_kind("gpipe") == ScheduleKind::gpipe);
    CHECK(parse_schedule_kind("1f1b") == ScheduleKind::one_f_one_b);
    CHECK_THROWS_WITH_AS(parse_schedule_kind("GPipe"), doctest::Contains("'GPipe' (choices: gpipe, 1f1b)"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(simulated_bubble(make_schedule(ScheduleKind::gpipe, 2, 2), 0.0, 1.0),
                         doctest::Contains("forward_cost = 0"), ConfigError);
    CHECK_THROWS_AS(simulated_bubble(hand_built(1, {"recvG0 B0 F0 sendA0", "recvA0 F0 B0 sendG0"})), Error);
}
