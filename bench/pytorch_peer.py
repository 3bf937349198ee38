#!/usr/bin/env python3
"""Plain PyTorch implementation of moe-train's model, the peer of bench/throughput.sh (eager, or
under torch.compile with --compile; fp32, or bf16 autocast with --bf16).

Same architecture and semantics as lib/moe (Hugging Face Mixtral): pre-RMSNorm, rotary
embeddings (rotate-half), grouped-query causal attention (scaled_dot_product_attention), top-k router with float32 softmax and
renormalisation, stacked SwiGLU experts run per expert over tokens sorted by expert, Switch
aux loss and router z-loss, AdamW. Written the way a PyTorch user would write it (no compile,
no fused kernels), so the ratio measures what the C++ trainer buys over eager PyTorch; then the
same module under torch.compile (inductor, which generates and compiles C++ for the CPU): its
compile time (the warm-up steps, which also recompile for new shapes) is reported apart from the
steady-state throughput.

    scripts/python-env.sh python bench/pytorch_peer.py --steps 20 --threads 1 --json [--compile] [--bf16]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, d, n_heads, n_kv, manual=False):
        super().__init__()
        self.h, self.g, self.hd, self.manual = n_heads, n_kv, d // n_heads, manual
        self.q_proj = nn.Linear(d, n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(d, n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(n_heads * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, S, self.g, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.g, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # PyTorch's fused attention, as Hugging Face's Mixtral uses by default (attn_implementation
        # "sdpa"), and as moe-train uses; --manual-attention gives the materialised-scores form.
        if not self.manual:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.h != self.g)
            return self.o_proj(y.transpose(1, 2).reshape(B, S, -1))
        rep = self.h // self.g
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hd) + mask
        att = att.softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, S, -1)
        return self.o_proj(y)


class SparseMoe(nn.Module):
    def __init__(self, d, f, n_experts, top_k, expert_matrices=False):
        super().__init__()
        self.e, self.k, self.keep_idle = n_experts, top_k, expert_matrices
        self.gate = nn.Linear(d, n_experts, bias=False)

        def stacked(rows, cols):
            # One [E, rows, cols] tensor, or (expert_matrices) E separate [rows, cols] parameters as
            # Hugging Face's Mixtral has them: what a PyTorch user hands DDP and its comm hooks.
            if expert_matrices:
                return nn.ParameterList(nn.Parameter(torch.randn(rows, cols) * 0.02) for _ in range(n_experts))
            return nn.Parameter(torch.randn(n_experts, rows, cols) * 0.02)

        self.w1, self.w3, self.w2 = stacked(f, d), stacked(f, d), stacked(d, f)

    def forward(self, x):
        B, S, D = x.shape
        x = x.reshape(-1, D)
        T = x.shape[0]
        logits = self.gate(x).float()
        probs = logits.softmax(-1)
        weights, ids = probs.topk(self.k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        f = torch.bincount(ids.flatten(), minlength=self.e).float() / T
        aux = self.e * (f * probs.mean(0)).sum()
        z = torch.logsumexp(logits, -1).pow(2).mean()
        flat_ids = ids.t().reshape(-1)
        order = torch.argsort(flat_ids, stable=True)
        tok = order % T
        counts = torch.bincount(flat_ids, minlength=self.e).tolist()
        rows = x[tok]
        outs, off = [], 0
        for e, n in enumerate(counts):
            if n == 0 and not self.keep_idle:
                continue  # (kept for DDP: an expert without tokens still gets its zero gradient)
            seg = rows[off:off + n]
            outs.append((F.silu(seg @ self.w1[e].t()) * (seg @ self.w3[e].t())) @ self.w2[e].t())
            off += n
        y = torch.cat(outs) * weights.t().reshape(-1)[order].unsqueeze(1)
        out = torch.zeros_like(x).index_add(0, tok, y)
        return out.view(B, S, D), aux, z


class DenseMlp(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)), None, None


class Block(nn.Module):
    def __init__(self, a, dense):
        super().__init__()
        self.input_layernorm = RMSNorm(a.d_model)
        self.self_attn = Attention(a.d_model, a.heads, a.kv_heads, getattr(a, "manual_attention", False))
        self.post_attention_layernorm = RMSNorm(a.d_model)
        self.mlp = (DenseMlp(a.d_model, a.top_k * a.ffn) if dense else
                    SparseMoe(a.d_model, a.ffn, a.experts, a.top_k, getattr(a, "expert_matrices", False)))

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        y, aux, z = self.mlp(self.post_attention_layernorm(x))
        return x + y, aux, z


class Model(nn.Module):
    def __init__(self, a, dense):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.d_model)
        self.layers = nn.ModuleList(Block(a, dense) for _ in range(a.layers))
        self.norm = RMSNorm(a.d_model)
        self.lm_head = nn.Linear(a.d_model, a.vocab, bias=False)
        hd = a.d_model // a.heads
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        fr = torch.outer(torch.arange(a.seq).float(), inv)
        emb = torch.cat((fr, fr), -1)
        self.cos, self.sin = emb.cos(), emb.sin()
        self.mask = torch.full((a.seq, a.seq), float("-inf")).triu(1)

    def logits_and_aux(self, tokens):
        """Logits and the router losses (aux 0.01, z 0.001, averaged over layers)."""
        x = self.embed_tokens(tokens)
        aux_total = 0.0
        for layer in self.layers:
            x, aux, z = layer(x, self.cos, self.sin, self.mask)
            if aux is not None:
                aux_total = aux_total + 0.01 * aux / len(self.layers) + 0.001 * z / len(self.layers)
        return self.lm_head(self.norm(x)), aux_total

    def forward(self, tokens, targets):
        logits, aux_total = self.logits_and_aux(tokens)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
        return loss + aux_total


def time_model(a, dense):
    torch.manual_seed(1)
    model = Model(a, dense)
    step_fn = torch.compile(model) if a.compile else model
    decay = [p for n, p in model.named_parameters() if "norm" not in n]
    plain = [p for n, p in model.named_parameters() if "norm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    times, warmup_s = [], 0.0
    for i in range(a.warmup + a.steps):
        tokens = torch.randint(a.vocab, (a.batch, a.seq + 1))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = step_fn(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
        else:
            warmup_s += dt
    return a.batch * a.seq / statistics.median(times), warmup_s


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in [("steps", 20), ("warmup", 3), ("threads", 1), ("batch", 8), ("seq", 128), ("layers", 4),
                          ("d_model", 128), ("heads", 4), ("kv_heads", 2), ("experts", 8), ("top_k", 2),
                          ("ffn", 256), ("vocab", 256)]:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=default)
    p.add_argument("--dense", action="store_true", help="time the dense model instead")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 weights and optimizer)")
    p.add_argument("--manual-attention", action="store_true",
                   help="scores materialised (q k^T, mask, softmax, @ v) instead of scaled_dot_product_attention")
    p.add_argument("--repeats", type=int, default=3, help="fresh models timed; the median is reported")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    runs = [time_model(a, a.dense) for _ in range(a.repeats)]
    tps = statistics.median(r[0] for r in runs)
    warmup_s = runs[0][1]   # the first run compiles; later ones hit the cache
    mode = ("compile" if a.compile else "eager") + (" bf16" if a.bf16 else "")
    if a.json:
        print(json.dumps({"tokens_per_s": round(tps, 1), "warmup_s": round(warmup_s, 2), "mode": mode,
                          "torch": torch.__version__}))
    else:
        print(f"PyTorch {torch.__version__} {mode}, {'dense' if a.dense else 'MoE'}: {tps:.1f} tokens/s "
              f"(warm-up {warmup_s:.1f} s)")


if __name__ == "__main__":
    main()
