#!/usr/bin/env python3
"""Replicas agree bit for bit: in a checkpoint where every rank wrote its own shard (compression
on), every tensor that two shards of the same pipeline stage both hold is identical in both.

    tests/python/replicas_identical.py STEP_DIR PP
"""
import hashlib
import os
import sys

import h5py
import numpy as np


def main():
    step_dir, pp = sys.argv[1], int(sys.argv[2])
    shards = sorted(f for f in os.listdir(step_dir) if f.startswith("rank-") and f.endswith(".h5"))
    hashes = {}   # (stage, tensor) -> {shard: sha256}
    for name in shards:
        stage = int(name[5:10]) % pp
        with h5py.File(os.path.join(step_dir, name), "r") as f:
            for t in f["model"]:
                digest = hashlib.sha256(np.ascontiguousarray(f["model"][t][...]).tobytes()).hexdigest()
                hashes.setdefault((stage, t), {})[name] = digest
    shared = {k: v for k, v in hashes.items() if len(v) > 1}
    differ = [k for k, v in shared.items() if len(set(v.values())) > 1]
    for stage, t in differ:
        print(f"stage {stage}: {t} differs between {sorted(hashes[(stage, t)])}")
    print(f"{len(shards)} shards, {len(shared)} tensors held by several replicas, {len(differ)} differ")
    return 1 if differ or not shared else 0


if __name__ == "__main__":
    sys.exit(main())
