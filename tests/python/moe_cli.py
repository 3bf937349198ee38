"""What the Python cross-checks share: train a short run and take its newest checkpoint, and ask
`moe-eval logits` for a token sequence. Standard library only: imported by tests run with
Debian's python (h5py) and with the project's venv (transformers)."""
import os
import subprocess


def train_checkpoint(train, config, work, steps=30):
    """Trains `steps` steps of `config` under <work>/run; returns the newest step folder."""
    run = os.path.join(work, "run")
    subprocess.run([train, config, "--run-dir", run, "--set", f"train.steps={steps}", "--set", "train.eval_every=0"],
                   check=True, stdout=subprocess.DEVNULL)
    ckpts = os.path.join(run, "checkpoints")
    with open(os.path.join(ckpts, "LATEST")) as f:
        return os.path.join(ckpts, f.read().strip())


def eval_logits(evaluate, step, tokens, work):
    """`moe-eval logits` of `tokens` on the checkpoint `step`: one list of floats per position."""
    token_file = os.path.join(work, "tokens.txt")
    with open(token_file, "w") as t:
        t.write(" ".join(map(str, tokens)) + "\n")
    out = subprocess.run([evaluate, "logits", "--checkpoint", step, "--tokens", token_file],
                         check=True, capture_output=True, text=True).stdout
    return [[float(v) for v in line.split()[2:]] for line in out.splitlines() if not line.startswith("#")]
