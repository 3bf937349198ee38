#!/usr/bin/env python3
"""A real client for `moe-eval export`: Hugging Face transformers' MixtralForCausalLM loads the
exported folder with from_pretrained, and its logits on a fixed token sequence must equal
`moe-eval logits` on the checkpoint (relative error <= 1e-4: max |ours - theirs| / max |theirs|).

    scripts/python-env.sh python tests/python/hf_transformers_test.py build/moe-train build/moe-eval configs/tiny.yaml

Runs in the project's venv (scripts/python-env.sh: PyTorch 2.11.0 and the pinned transformers).
"""
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import MixtralForCausalLM

from moe_cli import eval_logits, train_checkpoint


def main():
    train, evaluate, config = sys.argv[1:4]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="moe_hf_test_") as work:
        # Trained a little so the router is far from uniform and the top-k choices matter.
        step = train_checkpoint(train, config, work)
        export = os.path.join(work, "hf")
        subprocess.run([evaluate, "export", "--checkpoint", step, "--out", export], check=True,
                       stdout=subprocess.DEVNULL)

        model = MixtralForCausalLM.from_pretrained(export, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        vocab = model.config.vocab_size
        tokens = [(7 * i + 3) % vocab for i in range(24)]
        ours = torch.tensor(eval_logits(evaluate, step, tokens, work), dtype=torch.float64)
        with torch.no_grad():
            theirs = model(torch.tensor([tokens])).logits[0].to(torch.float64)

    if theirs.shape != ours.shape:
        print(f"FAILED: transformers gives {tuple(theirs.shape)} logits, moe-eval {tuple(ours.shape)}")
        sys.exit(1)
    rel = float((ours - theirs).abs().max() / theirs.abs().max())
    same_argmax = bool((ours.argmax(-1) == theirs.argmax(-1)).all())
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: {ours.shape[0]} positions x "
          f"{ours.shape[1]} logits, max |moe-eval - transformers| / max |transformers| = {rel:.2e} "
          f"(goal 1e-4), same argmax everywhere: {same_argmax}")
    if not rel <= 1e-4:
        print("FAILED: logits differ")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
