#!/usr/bin/env python3
"""Crafted checkpoint shards (issue 11, defect 7): a shard whose manifest checksums match but
whose contents lie. For each craft, `moe-eval verify` of the step folder fails (exit 15) naming
the file and the dataset, and a resume skips it, saying why, and continues from the older valid
checkpoint without ever growing large (sizes are checked before anything is allocated).

    tests/python/crafted_shard_test.py build/moe-train build/moe-eval configs/tiny.yaml

Exits 77 (ctest: skipped) when h5py or numpy is missing.
"""
import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:
    print(f"SKIPPED: {e} (install python3-h5py python3-numpy; scripts/test.sh does)")
    sys.exit(77)

SMALL = ["--set", "model.n_layers=1", "--set", "train.eval_every=0", "--set", "train.log_every=1000",
         "--set", "train.eval_batches=1", "--set", "checkpoint.every=5", "--set", "train.seq_len=32",
         "--set", "train.batch_size=2"]


def replace_dataset(f, name, **kwargs):
    del f[name]
    f.create_dataset(name, **kwargs)


# name -> (what it does to the shard, text the error must contain)
def rng_4gib(f):
    replace_dataset(f, "/state/rng/torch_cpu", shape=(4 << 30,), dtype="u1")


def rng_1tib(f):
    replace_dataset(f, "/state/rng/torch_cpu", shape=(1 << 40,), dtype="u1")


def negative_step(f):
    f["/state/schedule"].attrs["step"] = np.int64(-3)
    f.attrs["step"] = np.int64(-3)


def negative_sample(f):
    f["/state/data"].attrs["next_sample"] = np.int64(-1)


def negative_optimizer_step(f):
    f["/optim"].attrs["step"] = np.int64(-2)


def nan_weight(f):
    d = f["/model/model.norm.weight"]
    v = d[...]
    v[0] = np.nan
    d[...] = v


def negative_second_moment(f):
    d = f["/optim/model.norm.weight/exp_avg_sq"]
    v = d[...]
    v[0] = -1.0
    d[...] = v


def external_storage(f):
    shape = f["/model/model.norm.weight"].shape
    nbytes = int(np.prod(shape)) * 4
    replace_dataset(f, "/model/model.norm.weight", shape=shape, dtype="<f4", external=[("/dev/zero", 0, nbytes)])


CRAFTS = {
    "rng state declared 4 GiB": (rng_4gib, "/state/rng/torch_cpu' declares 4294967296 bytes"),
    "rng state declared 1 TiB": (rng_1tib, "/state/rng/torch_cpu' declares 1099511627776 bytes"),
    "negative step": (negative_step, "/state/schedule@step is -3"),
    "negative sample position": (negative_sample, "/state/data@next_sample is -1"),
    "negative optimizer step": (negative_optimizer_step, "/optim@step is -2"),
    "NaN weight": (nan_weight, "'/model/model.norm.weight' holds NaN or infinite values"),
    "negative second moment": (negative_second_moment, "exp_avg_sq' holds negative values"),
    "external storage on /dev/zero": (external_storage, "'/model/model.norm.weight' keeps its data in 1 external file"),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reseal(step_dir):
    """Makes the manifest match the crafted shard, as an attacker (or a buggy tool) would."""
    shard = os.path.join(step_dir, "rank-00000.h5")
    path = os.path.join(step_dir, "manifest.yaml")
    text = open(path).read()
    text = re.sub(r"(?m)^    bytes: \d+$", f"    bytes: {os.path.getsize(shard)}", text)
    text = re.sub(r"(?m)^    sha256: [0-9a-f]+$", f"    sha256: {sha256(shard)}", text)
    open(path, "w").write(text)


def main():
    train, evaluate, config = sys.argv[1:4]
    failures, failed = [], set()
    with tempfile.TemporaryDirectory(prefix="moe_crafted_") as work:
        base = os.path.join(work, "base")
        subprocess.run([train, config, *SMALL, "--set", "train.steps=12", "--stop-after", "10", "--run-dir", base],
                       check=True, capture_output=True)
        for name, (craft, expected) in CRAFTS.items():
            run = os.path.join(work, re.sub(r"\W+", "_", name))
            shutil.copytree(base, run)
            step10 = os.path.join(run, "checkpoints", "step-00000010")
            with h5py.File(os.path.join(step10, "rank-00000.h5"), "r+") as f:
                craft(f)
            reseal(step10)
            problems = []
            v = subprocess.run([evaluate, "verify", step10], capture_output=True, text=True)
            if v.returncode != 15 or expected not in v.stderr or "rank-00000.h5" not in v.stderr:
                problems.append(f"verify exit {v.returncode}: {v.stderr.strip()}")
            r = subprocess.run([train, config, *SMALL, "--set", "train.steps=12", "--run-dir", run],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                problems.append(f"resume exit {r.returncode}: {r.stderr.strip()[-400:]}")
            if "skipping checkpoint" not in r.stderr or expected not in r.stderr:
                problems.append(f"resume did not skip it saying why: {r.stderr.strip()[-400:]}")
            if "resumed from" not in r.stdout or "step-00000005" not in r.stdout:
                problems.append(f"did not resume from step 5: {r.stdout.strip()[-200:]}")
            if "status: completed" not in open(os.path.join(run, "record.yaml")).read():
                problems.append("the record does not say completed")
            print(f"{'ok' if not problems else 'FAILED'}: {name}")
            failures += [f"{name}: {p}" for p in problems]
            if problems:
                failed.add(name)
    # Every child (verify and resume of each craft) stayed small: nothing was allocated from a size
    # the shard declared.
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"largest child process: {peak_mib:.0f} MiB")
    if peak_mib > 1024:
        failures.append(f"a child grew to {peak_mib:.0f} MiB")
    for f in failures:
        print(f"  {f}")
    print(f"{len(CRAFTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
