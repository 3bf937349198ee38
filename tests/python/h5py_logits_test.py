#!/usr/bin/env python3
"""Cross-check of the checkpoint format: rebuild the model from a checkpoint shard with h5py and
numpy alone (following docs/checkpoint-format.md), run it on a short token sequence, and compare
with `moe-eval logits` to 1e-4.

    tests/python/h5py_logits_test.py build/moe-train build/moe-eval configs/tiny.yaml

Exits 77 (ctest: skipped) with a message when h5py or numpy is missing.
"""
import os
import sys
import tempfile

from moe_cli import eval_logits, train_checkpoint

try:
    import h5py
    import numpy as np
except ImportError as e:
    print(f"SKIPPED: {e} (install python3-h5py python3-numpy; scripts/test.sh does)")
    sys.exit(77)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotary(x, theta):
    """x: [S, heads, hd]; Hugging Face rotate_half convention."""
    S, _, hd = x.shape
    inv_freq = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    freqs = np.outer(np.arange(S, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=1)[:, None, :]
    half = hd // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.cos(emb) + rotated * np.sin(emb)


def silu(x):
    return x / (1.0 + np.exp(-x))


def text(value):
    """String attributes are fixed-length ASCII; h5py hands them back as bytes."""
    return value.decode() if isinstance(value, (bytes, np.bytes_)) else str(value)


def forward(f, tokens):
    a = f["model"].attrs
    if text(a["routing"]) != "token_choice" or a["capacity_factor"] != 0 or a["shared_experts"] or a["first_dense_layers"]:
        raise SystemExit("this reference implements dropless token-choice Mixtral layers only")
    m = lambda name: np.asarray(f["model"][name], dtype=np.float64)
    H, G, hd, eps, E, K = (int(a["n_heads"]), int(a["n_kv_heads"]), int(a["head_dim"]), float(a["norm_eps"]),
                           int(a["num_experts"]), int(a["top_k"]))
    S = len(tokens)
    h = m("model.embed_tokens.weight")[tokens]
    mask = np.triu(np.full((S, S), -np.inf), 1)
    for l in range(int(a["n_layers"])):
        p = f"model.layers.{l}."
        x = rms_norm(h, m(p + "input_layernorm.weight"), eps)
        q = rotary((x @ m(p + "self_attn.q_proj.weight").T).reshape(S, H, hd), float(a["rope_theta"]))
        k = rotary((x @ m(p + "self_attn.k_proj.weight").T).reshape(S, G, hd), float(a["rope_theta"]))
        v = (x @ m(p + "self_attn.v_proj.weight").T).reshape(S, G, hd)
        out = np.zeros((S, H, hd))
        for head in range(H):
            g = head // (H // G)   # each key/value head serves consecutive query heads
            scores = q[:, head] @ k[:, g].T / np.sqrt(hd) + mask
            w = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[:, head] = (w / w.sum(axis=1, keepdims=True)) @ v[:, g]
        h = h + out.reshape(S, H * hd) @ m(p + "self_attn.o_proj.weight").T
        x = rms_norm(h, m(p + "post_attention_layernorm.weight"), eps)
        logits = x @ m(p + "block_sparse_moe.gate.weight").T
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        moe_out = np.zeros_like(x)
        for t in range(S):
            top = np.argsort(-probs[t], kind="stable")[:K]
            weights = probs[t, top] / (probs[t, top].sum() if a["renormalize"] else 1.0)
            for e, wt in zip(top, weights):
                ex = f"{p}block_sparse_moe.experts.{e}."
                hidden = silu(m(ex + "w1.weight") @ x[t]) * (m(ex + "w3.weight") @ x[t])
                moe_out[t] += wt * (m(ex + "w2.weight") @ hidden)
        h = h + moe_out
    x = rms_norm(h, m("model.norm.weight"), eps)
    head = m("model.embed_tokens.weight") if a["tie_embeddings"] else m("lm_head.weight")
    return x @ head.T


def main():
    train, evaluate, config = sys.argv[1:4]
    with tempfile.TemporaryDirectory(prefix="moe_h5py_test_") as work:
        step = train_checkpoint(train, config, work)
        shard = os.path.join(step, "rank-00000.h5")
        with h5py.File(shard, "r") as f:
            vocab = int(f["model"].attrs["vocab_size"])
            tokens = [(7 * i + 3) % vocab for i in range(24)]
            theirs = np.array(eval_logits(evaluate, step, tokens, work))
            ours = forward(f, np.array(tokens))
            step_attr = int(f.attrs["step"])
    assert theirs.shape == ours.shape, (theirs.shape, ours.shape)
    diff = float(np.max(np.abs(theirs - ours)))
    print(f"checkpoint step {step_attr}: {ours.shape[0]} positions x {ours.shape[1]} logits, "
          f"max |moe-eval - numpy| = {diff:.2e} (tolerance 1e-4)")
    if not diff <= 1e-4:
        print("FAILED: logits differ")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
