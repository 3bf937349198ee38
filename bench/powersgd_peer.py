#!/usr/bin/env python3
"""PyTorch's own PowerSGD (DDP over gloo with torch's powerSGD_hook), the peer of
bench/compression.sh: the model of bench/pytorch_peer.py, trained data-parallel on 2 processes
with tiny.yaml's settings, on token shards that moe-train trains on as well.

  write-data DIR     writes DIR/train.bin and DIR/eval.bin (llm.c shards: 256 x int32 header,
                     then uint16 tokens): a mixture of random Markov sources like moe-train's
                     synthetic corpus, one 128-token document per window (moe-train cuts 129-token
                     windows at a stride of 128, and so does this script); eval.bin holds exactly
                     32 windows, all of which moe-train evaluates with train.eval_batches 8 and
                     batch 4 (its eval visits held-out windows in order).
  train DIR --mode plain|powersgd [--rank R] [--start-iter S] [--steps N] --out F.json
                     trains on DIR/train.bin and writes the final eval loss (cross-entropy over
                     every window of DIR/eval.bin) and the compression figures to F.json.

Settings mirror configs/tiny.yaml under dp=2 (batch 4 per rank, lr 3e-3 with 30 warm-up steps
and cosine decay to 0.1x, AdamW betas 0.9/0.95, weight decay 0.1 except norms, clipping at 1,
init N(0, 0.02), norms 1) so that each trainer's gap between its compressed and uncompressed run
is comparable. The experts are separate [f, d] matrices, as in Hugging Face's Mixtral: the hook
views every gradient as [shape[0], -1], so one stacked [E, f, d] tensor would be compressed as
an 8 x 32768 matrix, which is not what a PyTorch user of Mixtral gets.
"""
import argparse
import json
import math
import os
import socket
import sys
import time
import types

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_peer import Model  # noqa: E402

SEQ = 128
MAGIC, VERSION = 20240520, 1


def write_shard(path, tokens):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (MAGIC, VERSION, tokens.size)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())


def read_shard(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype=np.int32)
        if header[0] != MAGIC or header[1] != VERSION:
            raise SystemExit(f"{path}: not an llm.c shard (magic {header[0]}, version {header[1]})")
        tokens = np.frombuffer(f.read(), dtype=np.uint16)
    if tokens.size != header[2]:
        raise SystemExit(f"{path}: header says {header[2]} tokens, file holds {tokens.size}")
    # moe-train's windows (lib/data/data_source.cpp): SEQ + 1 tokens at a stride of SEQ, so every
    # token after the first is a target once.
    n = (tokens.size - 1) // SEQ
    return torch.from_numpy(tokens.astype(np.int64)).unfold(0, SEQ + 1, SEQ)[:n].contiguous()


def markov_documents(rng, n_docs, vocab=64, sources=4, branching=4):
    """n_docs documents of SEQ tokens (one window's inputs), each from one of `sources` random
    first-order chains whose states have `branching` successors with Dirichlet(1) probabilities."""
    succ = np.stack([np.stack([rng.choice(vocab, branching, replace=False) for _ in range(vocab)])
                     for _ in range(sources)])                       # [S, V, b]
    prob = rng.dirichlet(np.ones(branching), size=(sources, vocab))  # [S, V, b]
    src = rng.integers(sources, size=n_docs)
    docs = np.empty((n_docs, SEQ), dtype=np.int64)
    docs[:, 0] = rng.integers(vocab, size=n_docs)
    for t in range(1, SEQ):
        prev = docs[:, t - 1]
        cdf = prob[src, prev].cumsum(-1)
        pick = (rng.random(n_docs)[:, None] > cdf).sum(-1).clip(max=branching - 1)
        docs[:, t] = succ[src, prev, pick]
    return docs


def write_data(out_dir, train_docs):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(1234)
    docs = markov_documents(rng, train_docs + 34)
    # One token more than whole windows: the last window's last target is the next doc's first.
    write_shard(os.path.join(out_dir, "train.bin"), docs[:train_docs + 1].reshape(-1)[:train_docs * SEQ + 1])
    write_shard(os.path.join(out_dir, "eval.bin"), docs[train_docs + 1:].reshape(-1)[:32 * SEQ + 1])


def lr_at(step, steps, lr=3e-3, warmup=30, min_ratio=0.1):
    """configs/tiny.yaml's schedule, as lib/optim/lr_schedule.cpp computes it."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(max((step - warmup) / max(1, steps - warmup - 1), 0.0), 1.0)
    return lr * min_ratio + 0.5 * (lr - lr * min_ratio) * (1.0 + math.cos(math.pi * progress))


def worker(rank, world, port, a):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    shape = types.SimpleNamespace(vocab=64, d_model=128, layers=4, heads=4, kv_heads=2, experts=8, top_k=2,
                                  ffn=256, seq=SEQ, expert_matrices=True)
    torch.manual_seed(a.seed)
    model = Model(shape, dense=False)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.fill_(1.0) if "norm" in n else p.normal_(0.0, 0.02)
    # The hook issues its Q all-reduce from a future's callback, on another thread; on gloo any
    # other collective in flight then races it and the ranks' collectives mismatch (seen:
    # "Received data size doesn't match expected size"). So: one bucket (bucket_cap_mb above the
    # model's 13 MiB of gradients) and no find_unused_parameters, whose per-step all-reduce of the
    # used-parameter map would be such a collective; every parameter gets a gradient every step
    # instead (idle experts run on zero rows).
    ddp = DDP(model, bucket_cap_mb=1024)
    state = None
    if a.mode == "powersgd":
        state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=a.rank,
                                   start_powerSGD_iter=a.start_iter, min_compression_rate=2,
                                   use_error_feedback=True, warm_start=True, random_seed=0)
        ddp.register_comm_hook(state, psgd.powerSGD_hook)
    decay = [p for n, p in model.named_parameters() if "norm" not in n]
    plain = [p for n, p in model.named_parameters() if "norm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    train = read_shard(os.path.join(a.data, "train.bin"))
    g = torch.Generator().manual_seed(a.seed)
    perm, per_rank, global_batch = torch.randperm(len(train), generator=g), 4, 4 * world
    t0 = time.perf_counter()
    for step in range(a.steps):
        start = (step * global_batch) % len(train)
        if start + global_batch > len(train):  # a new epoch: a new order
            perm = torch.randperm(len(train), generator=g)
        rows = train[perm[start + rank * per_rank: start + (rank + 1) * per_rank]]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, a.steps)
        opt.zero_grad(set_to_none=True)
        ddp(rows[:, :-1], rows[:, 1:]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - t0
    if rank == 0:
        evals = read_shard(os.path.join(a.data, "eval.bin"))
        with torch.no_grad():
            logits, _ = model.logits_and_aux(evals[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), evals[:, 1:].reshape(-1)).item()
        numel = sum(p.numel() for p in model.parameters())
        result = {"mode": a.mode, "steps": a.steps, "final_eval_loss": loss, "train_seconds": seconds,
                  "torch": torch.__version__, "gradient_elements": numel}
        if state is not None:
            rate, before, after = state.compression_stats()
            compressed = a.steps - a.start_iter
            if before != compressed * numel:  # the hook saw every gradient of every compressed step
                raise SystemExit(f"powerSGD counted {before} elements, expected {compressed} x {numel}")
            # Whole run, as moe-train's record counts it: the plain first steps at full size.
            result.update(rank=a.rank, start_iter=a.start_iter, compress_rate=rate,
                          whole_run_ratio=a.steps * numel / (a.start_iter * numel + after))
        with open(a.out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-data")
    w.add_argument("dir")
    w.add_argument("--train-docs", type=int, default=4096)
    t = sub.add_parser("train")
    t.add_argument("data")
    t.add_argument("--mode", choices=["plain", "powersgd"], required=True)
    t.add_argument("--rank", type=int, default=4)
    t.add_argument("--start-iter", type=int, default=2, help="plain steps first (the hook needs >= 2)")
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--out", required=True)
    a = p.parse_args()
    if a.cmd == "write-data":
        write_data(a.dir, a.train_docs)
    else:
        mp.spawn(worker, args=(2, free_port(), a), nprocs=2, join=True)


if __name__ == "__main__":
    main()
