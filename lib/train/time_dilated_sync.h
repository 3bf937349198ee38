// Time-dilated asynchronous SGD (DESIGN section 6) as a ReplicaSync strategy.
//
// The unit of asynchrony is the model replica (its pp x ep ranks): inside it every inner step is
// synchronous (dense gradients averaged over its expert group, as in synchronous training);
// across the dp / ep model replicas nothing couples a step. Each replica trains its own
// parameters theta_w with the inner optimizer for a window (async.window_seconds of wall clock,
// or async.window_steps inner steps), counting the tokens n_w it trained on. At the window's end
// it launches the non-blocking exchange of [n_w (theta_anchor - theta_w), n_w] (dense parameters
// over the data group, experts over the expert-data group; lib/parallel/outer_exchange.h) and
// goes on with the next window. When the exchange completes (polled after every inner step), the
// outer Nesterov step (lib/optim/outer_nesterov.h) moves the anchor, the same bits on every
// replica, and the replica rebases: theta_w = anchor + gamma(tau) (theta_w - theta_w at launch),
// gamma(tau) = (1 + tau)^-alpha, tau = inner steps taken since the launch.
//
// When the merge is applied:
//   blocking:                 at once (the window's end waits for it; tau = 0)
//   window_steps > 0:         after exactly one more inner step (waiting if it is not complete):
//                             deterministic, so runs repeat bit for bit
//   window_seconds:           after the first inner step at which every rank of the replica has
//                             seen it complete (a window's end waits for a merge still in flight)
// The ranks of one model replica agree after every inner step on the window's end, a stop
// request and a completed merge (one tiny all-reduce over the model replica, whose ranks are
// coupled every step anyway); step-based windows need that only at the window's end.
//
// Budget: the run ends at the first merge after which the tokens merged over all replicas reach
// train.steps x the global batch; the replicas' parameters then become the anchor (the inner
// steps after that merge's launch are discarded and counted). A stop (signal, --stop-after) is
// a vote carried by the next merge: every rank stops at the merge that carries one. The LR
// schedule follows the replica's estimate of the global token count: the merged tokens plus its
// own unmerged tokens divided by its share of the last merge.
#pragma once

#include <memory>

#include "train/replica_sync.h"

namespace moe {

std::unique_ptr<ReplicaSync> make_time_dilated_sync(const Config& cfg, ParameterStore& params, ParallelContext& par);

}  // namespace moe
