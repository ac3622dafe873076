#!/usr/bin/env python3
"""The PyTorch side of the whole-step benchmark (issue #11), one JSON line per configuration.

Runs on the GPU machine (torch 2.11, transformers 5; peft optional) at Llama-3-8B shape with
random weights, bf16, next to `lizard bench step` so both use the same card:

  anchor    transformers LlamaForCausalLM, SDPA softmax attention, LoRA r=8 alpha 16 on q,k,v,
            fused AdamW on the adapters (ANCHORS.md "The best PyTorch step today").
  lizard    the same step with every attention replaced by Lizard attention written in torch
            ops (the chunked form of DESIGN.md section 3 plus the sliding window with sinks),
            eager and torch.compile'd (best reported; compile failures fall back to eager).
  distill   stage 1: teacher forward without grad, per layer the Lizard attention on the
            teacher's q, k, v and the MSE to the teacher's attention output; only the Lizard
            parameters train (AdamW).

FLOPs per token (the same conventions as src/train/step_cost.cpp, so MFUs compare): N = all
parameters; anchor 4N + 6 N_lora + 3 x 4 (T/2) H D per layer; lizard 4N + 6 N_lora + 3 x the
Lizard forward per layer; distill 2 N_layers (less the last layer's o_proj, norm and MLP,
never run: both stacks stop at the last layer's attention) + 4 (T/2) H D + 3 x Lizard forward
per layer.
Each configuration catches out-of-memory and reports it instead of stopping the run.

  python3 scripts/bench_torch_step.py [--configs anchor,lizard,distill] [--mbs 1,4]
      [--seq 2048] [--steps 5] [--warmup 2] [--compile auto|off] [--layers 32]
"""
import argparse
import json
import math
import statistics
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}

# Llama-3-8B (configs/models/llama3_8b.yaml).
ARCH = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
            rope_theta=500000.0, max_position_embeddings=8192, tie_word_embeddings=False)
# Lizard defaults (DESIGN.md section 2): F = 128 (phi width 256), window 128, 4 sinks, chunk 64.
LIZ = dict(feature_dim=128, window=128, sinks=4, chunk=64, eps=1e-6)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peak_flops():
    name = torch.cuda.get_device_name()
    for k, v in PEAK_FLOPS.items():
        if k in name:
            return v
    return 0.0


# ---------------------------------------------------------------- LoRA (peft or our own) ----
class LoraLinear(nn.Module):
    """y = base(x) + (alpha / r) B A x, A Kaiming-uniform, B zero, adapters fp32 (as peft's
    autocast_adapter_dtype), base frozen."""

    def __init__(self, base: nn.Linear, r=8, alpha=16):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device,
                                               dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device,
                                               dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        y = self.base(x)
        z = F.linear(F.linear(x.float(), self.lora_A), self.lora_B) * self.scale
        return y + z.to(y.dtype)


def add_lora(model):
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        import peft  # noqa: F401
        from peft import LoraConfig, get_peft_model
        cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                         target_modules=["q_proj", "k_proj", "v_proj"])
        return get_peft_model(model, cfg), "peft " + peft.__version__
    except ImportError:
        for layer in model.model.layers:
            a = layer.self_attn
            a.q_proj, a.k_proj, a.v_proj = (LoraLinear(a.q_proj), LoraLinear(a.k_proj),
                                            LoraLinear(a.v_proj))
        return model, "own LoRA (peft not installed)"


# ------------------------------------------------------------ Lizard attention in torch ----
def lizard_mix(q, k, v, x, wq, wk, w_g, b_g, tau, alpha, chunk, window, eps):
    """Lizard attention, chunked (DESIGN.md section 3). q [B,T,H,D], k, v [B,T,Hkv,D] (no RoPE),
    x [B,T,d] for the shared gate. Returns y [B,T,H,D] = g + alpha l."""
    B, T, H, D = q.shape
    rep = H // k.shape[2]
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    C = chunk
    assert T % C == 0, "T must be a multiple of the chunk"
    N = T // C
    dt = q.dtype

    def phi(u_in, w):  # [B,T,H,D] x [H,D,F] -> [B,H,T,2F]
        u = torch.einsum("bthd,hdf->bhtf", u_in, w.to(dt)).float()
        return torch.cat([u.softmax(-1), (-u).softmax(-1)], -1).to(dt)

    pq, pk = phi(q, wq), phi(k, wk)
    a = F.logsigmoid(x.float() @ w_g.float() + b_g.float())            # [B,T] fp32
    b = a.view(B, N, C).cumsum(-1)                                      # chunk-local, <= 0
    vt = v.transpose(1, 2)                                              # [B,H,T,D]
    v1 = torch.cat([vt, torch.ones_like(vt[..., :1])], -1).view(B, H, N, C, D + 1)
    pq = pq.view(B, H, N, C, -1)
    pk = pk.view(B, H, N, C, -1)
    # intra-chunk: (phi_q phi_k^T) * exp(b_t - b_s) on the causal tile
    dec = (b[:, :, :, None] - b[:, :, None, :])                        # [B,N,C,C]
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    dec = torch.where(causal, dec, torch.full_like(dec, -float("inf"))).exp()
    s = (pq @ pk.transpose(-1, -2)).float() * dec[:, None]
    out = (s.to(dt) @ v1).float()                                       # [B,H,N,C,D+1]
    # chunk contributions to the state, decayed to the chunk's end, then a scan over chunks
    bend = b[:, :, -1]                                                  # [B,N]
    kc = (pk.float() * (bend[:, :, None] - b).exp()[:, None, :, :, None]).to(dt)
    contrib = (kc.transpose(-1, -2) @ v1).float()                       # [B,H,N,2F,D+1]
    cb = bend.cumsum(-1)                                                # [B,N]
    # state before chunk n = sum_{m<n} exp(cb_{n-1} - cb_m) contrib_m
    lag = cb[:, :, None] - cb[:, None, :]                               # [B,n,m] = cb_n - cb_m
    strict = torch.ones(N, N, dtype=torch.bool, device=q.device).tril(-1)
    wdec = torch.where(strict, (lag - bend[:, :, None]), torch.full_like(lag, -float("inf"))).exp()
    state = torch.einsum("bnm,bhmfe->bhnfe", wdec, contrib)
    qd = (pq.float() * b.exp()[:, None, :, :, None]).to(dt)
    out = out + (qd @ state.to(dt)).float()
    g = out[..., :D] / out[..., D:].clamp_min(eps)
    g = g.view(B, H, T, D)
    # window: t - w < s <= t, blocks of w queries against their block and the previous one
    W = window
    qs = q.transpose(1, 2) / math.sqrt(D)
    Tp = ((T + W - 1) // W) * W
    nb = Tp // W
    qs = F.pad(qs, (0, 0, 0, Tp - T))
    qb = qs.reshape(B, H, nb, W, D)
    k = F.pad(k, (0, 0, 0, 0, 0, Tp - T))
    v = F.pad(v, (0, 0, 0, 0, 0, Tp - T))
    kb = torch.cat([torch.zeros_like(k[:, :W]), k], 1).transpose(1, 2).reshape(B, H, nb + 1, W, D)
    vb = torch.cat([torch.zeros_like(v[:, :W]), v], 1).transpose(1, 2).reshape(B, H, nb + 1, W, D)
    kk = torch.cat([kb[:, :, :-1], kb[:, :, 1:]], 3)                    # [B,H,nb,2W,D]
    vv = torch.cat([vb[:, :, :-1], vb[:, :, 1:]], 3)
    sc = (qb @ kk.transpose(-1, -2)).float()                            # [B,H,nb,W,2W]
    i = torch.arange(W, device=q.device)[:, None]
    j = torch.arange(2 * W, device=q.device)[None, :]
    keep = (j - W <= i) & (j - W > i - W)                               # s in (t-w, t]
    first = torch.arange(nb, device=q.device)[:, None, None] > 0
    keep = keep[None] & (first | (j >= W)[None])                        # no keys before 0
    sc = sc.masked_fill(~keep, -float("inf"))
    m = torch.maximum(sc.amax(-1, keepdim=True), tau.float().max())
    e = (sc - m).exp()
    den = e.sum(-1, keepdim=True) + (tau.float() - m[..., None]).exp().sum(-1)
    l = ((e.to(dt) @ vv).float() / den).reshape(B, H, Tp, D)[:, :, :T]
    y = g + alpha.float() * l
    return y.transpose(1, 2).to(dt)


def lizard_naive(q, k, v, x, wq, wk, w_g, b_g, tau, alpha, chunk, window, eps):
    """The O(T^2) formula of DESIGN.md section 2 in float64 (the oracle of lizard_mix)."""
    q, k, v, x = (t.double() for t in (q, k, v, x))
    B, T, H, D = q.shape
    rep = H // k.shape[2]
    k, v = k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)

    def phi(u_in, w):
        u = torch.einsum("bthd,hdf->bhtf", u_in, w.double())
        return torch.cat([u.softmax(-1), (-u).softmax(-1)], -1)

    pq, pk = phi(q, wq), phi(k, wk)
    bcum = F.logsigmoid(x @ w_g.double() + b_g.double()).cumsum(-1)          # [B,T]
    t_idx = torch.arange(T, device=q.device)
    causal = t_idx[:, None] >= t_idx[None, :]
    dec = torch.where(causal, bcum[:, :, None] - bcum[:, None, :], torch.tensor(-float("inf"),
                      dtype=torch.float64, device=q.device)).exp()            # [B,T,T]
    a = (pq @ pk.transpose(-1, -2)) * dec[:, None]
    vt = v.transpose(1, 2)
    g = (a @ vt) / a.sum(-1, keepdim=True).clamp_min(eps)
    c = (q.transpose(1, 2) @ k.permute(0, 2, 3, 1)) / math.sqrt(D)          # [B,H,T,T]
    inwin = causal & (t_idx[:, None] - t_idx[None, :] < window)
    c = c.masked_fill(~inwin, -float("inf"))
    m = torch.maximum(c.amax(-1, keepdim=True), tau.double().max())
    e = (c - m).exp()
    den = e.sum(-1, keepdim=True) + (tau.double() - m[..., None]).exp().sum(-1)
    y = g + alpha.double() * (e @ vt) / den
    return y.transpose(1, 2)


def self_check():
    """lizard_mix (fp32, chunked) against lizard_naive (fp64) with non-trivial parameters."""
    torch.manual_seed(0)
    worst = 0.0
    for B, T, H, Hkv, D, d in [(2, 192, 4, 2, 32, 48), (1, 256, 2, 1, 16, 24)]:
        q = torch.randn(B, T, H, D, device="cuda")
        k = torch.randn(B, T, Hkv, D, device="cuda")
        v = torch.randn(B, T, Hkv, D, device="cuda")
        x = torch.randn(B, T, d, device="cuda")
        Fd = 24
        wq, wk = torch.randn(H, D, Fd, device="cuda") * 0.3, torch.randn(H, D, Fd, device="cuda") * 0.3
        w_g, b_g = torch.randn(d, device="cuda") * 0.5, torch.tensor(1.0, device="cuda")
        tau, alpha = torch.randn(4, device="cuda"), torch.tensor(0.7, device="cuda")
        y = lizard_mix(q, k, v, x, wq, wk, w_g, b_g, tau, alpha, 64, 48, 1e-6)
        r = lizard_naive(q, k, v, x, wq, wk, w_g, b_g, tau, alpha, 64, 48, 1e-6)
        err = ((y.double() - r).norm() / r.norm()).item()
        worst = max(worst, err)
    # fp32 chunked vs fp64 naive: the chunk scheme is exact algebra, so only fp32 rounding
    # (about 1e-6 relative) separates them; 1e-4 leaves room and still catches any wrong term.
    print(json.dumps({"config": "self_check", "rel_err": worst, "ok": worst < 1e-4}), flush=True)
    return worst < 1e-4


class LizardParams(nn.Module):
    def __init__(self, H, D, d, dev):
        super().__init__()
        Fd = LIZ["feature_dim"]
        eye = torch.zeros(H, D, Fd, device=dev)
        eye[:, torch.arange(min(D, Fd)), torch.arange(min(D, Fd))] = 1
        self.wq = nn.Parameter(eye.clone())
        self.wk = nn.Parameter(eye.clone())
        self.w_g = nn.Parameter(torch.zeros(d, device=dev))
        self.b_g = nn.Parameter(torch.zeros((), device=dev))
        self.tau = nn.Parameter(torch.zeros(LIZ["sinks"], device=dev))
        self.alpha = nn.Parameter(torch.ones((), device=dev))

    def args(self):
        return (self.wq, self.wk, self.w_g, self.b_g, self.tau, self.alpha,
                LIZ["chunk"], LIZ["window"], LIZ["eps"])


class LizardAttention(nn.Module):
    """Drop-in for LlamaAttention: the same (LoRA'd) projections, Lizard mixing, o_proj."""

    def __init__(self, attn, mix):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (attn.q_proj, attn.k_proj,
                                                              attn.v_proj, attn.o_proj)
        cfg = attn.config
        self.H, self.Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.D = getattr(cfg, "head_dim", cfg.hidden_size // self.H)
        self.liz = LizardParams(self.H, self.D, cfg.hidden_size, attn.o_proj.weight.device)
        self.mix = mix
        self.recompute = False

    def forward(self, hidden_states, *args, **kwargs):
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.H, self.D)
        k = self.k_proj(hidden_states).view(B, T, self.Hkv, self.D)
        v = self.v_proj(hidden_states).view(B, T, self.Hkv, self.D)
        if self.recompute:
            y = torch.utils.checkpoint.checkpoint(self.mix, q, k, v, hidden_states,
                                                  *self.liz.args(), use_reentrant=False)
        else:
            y = self.mix(q, k, v, hidden_states, *self.liz.args())
        return self.o_proj(y.reshape(B, T, self.H * self.D)), None


# --------------------------------------------------------------------------- the model ----
def build_model(layers):
    from transformers import LlamaConfig, LlamaForCausalLM
    kw = dict(ARCH)
    kw["num_hidden_layers"] = layers
    cfg = LlamaConfig(**kw)
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    t0 = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    # Our own init (as lizard's init_random): whatever transformers does at construction,
    # the weights are finite and the first loss is about ln V.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0)
    model.config.use_cache = False
    log(f"built LlamaForCausalLM ({sum(p.numel() for p in model.parameters()) / 1e9:.3f}B) "
        f"in {time.time() - t0:.1f}s")
    return model, cfg


def decoder(model):
    """The LlamaModel inside (through a peft wrapper or not): embed_tokens, layers, rotary_emb."""
    for mod in model.modules():
        if hasattr(mod, "layers") and hasattr(mod, "embed_tokens"):
            return mod
    raise RuntimeError("no LlamaModel inside the model")


def time_steps(step, warmup, steps):
    times = []
    for i in range(warmup + steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        loss = step()
        b.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(a.elapsed_time(b))
        if not math.isfinite(loss):
            raise RuntimeError(f"non-finite loss {loss}")
    return statistics.median(times), loss


def attention_flops(T, cfg, kind):
    H, D, d = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
    if kind == "softmax":
        return 4 * (T / 2) * H * D
    Fd, C, W = LIZ["feature_dim"], LIZ["chunk"], LIZ["window"]
    per_head = (2 * 2 * D * Fd + 2 * 2 * Fd * C / 2 + 2 * (C / 2) * (D + 1)
                + 2 * 2 * 2 * Fd * (D + 1) + 4 * W * D)
    return H * per_head + 2 * d


def run_config(name, model, cfg, n_params, n_lora, T, mb, args, mode="eager"):
    L, V = cfg.num_hidden_layers, cfg.vocab_size
    inner = decoder(model)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(0, V, (mb, T), device="cuda")
    if name == "distill":
        params = [p for layer in inner.layers for p in layer.self_attn.liz.parameters()]
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), fused=True)
        step = distill_step(inner, ids, opt)
        n_layers = n_params - 2 * V * cfg.hidden_size - cfg.hidden_size
        # the teacher stops at the last layer's attention: no o_proj, norm, MLP there
        d, I = cfg.hidden_size, cfg.intermediate_size
        hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
        n_layers -= cfg.num_attention_heads * hd * d + d + 3 * d * I  # o_proj, norm, MLP
        fpt = 2 * n_layers + L * (attention_flops(T, cfg, "softmax")
                                  + 3 * attention_flops(T, cfg, "lizard"))
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.99), fused=True)

        def step():
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return out.loss.item()
        kind = "softmax" if name == "anchor" else "lizard"
        fpt = 4 * n_params + 6 * n_lora + 3 * L * attention_flops(T, cfg, kind)
    # torch.compile'd steps keep recompiling for a step or two (the optimizer's first step
    # creates its state): at least 3 warm-up steps there, or the median catches a compile
    # (the tenth session saw the same config at 11.1K-14.2K tokens/s with one warm-up step)
    warmup = max(args.warmup, 3) if mode == "compile" else args.warmup
    ms, loss = time_steps(step, warmup, args.steps)
    tps = mb * T / (ms / 1e3)
    pk = peak_flops()
    del opt
    return {"config": name, "mode": mode, "seq_len": T, "micro_batch": mb, "warmup_steps": warmup,
            "step_ms": round(ms, 2), "tokens_per_s": round(tps, 1),
            "flops_per_token": fpt, "mfu": round(fpt * tps / pk, 4) if pk else None,
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "loss": round(loss, 4)}


def distill_step(inner, ids, opt):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    def step():
        B, T = ids.shape
        with torch.no_grad():
            h = inner.embed_tokens(ids)
            pos = torch.arange(T, device=ids.device)[None]
            cos, sin = inner.rotary_emb(h, pos)
        total = 0.0
        for layer in inner.layers:
            at = layer.self_attn
            with torch.no_grad():
                xn = layer.input_layernorm(h)
                q = at.q_proj(xn).view(B, T, at.H, at.D)
                k = at.k_proj(xn).view(B, T, at.Hkv, at.D)
                v = at.v_proj(xn).view(B, T, at.Hkv, at.D)
                qr, kr = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
                yt = F.scaled_dot_product_attention(qr, kr, v.transpose(1, 2), is_causal=True,
                                                    enable_gqa=True).transpose(1, 2)
            if at.recompute:
                ys = torch.utils.checkpoint.checkpoint(at.mix, q, k, v, xn, *at.liz.args(),
                                                       use_reentrant=False)
            else:
                ys = at.mix(q, k, v, xn, *at.liz.args())
            total = total + F.mse_loss(ys.float(), yt.float())
            if layer is inner.layers[-1]:
                break  # the last layer's o_proj and MLP feed no target (as lizard's DistillTask)
            with torch.no_grad():
                h = h + at.o_proj(yt.reshape(B, T, -1))
                h = h + layer.mlp(layer.post_attention_layernorm(h))
        loss = total / len(inner.layers)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


ROWS = []


def emit(row, extra):
    row.update(extra)
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def emit_best():
    """One summary line: per (config, micro-batch) the best tokens/s over eager and compile."""
    best = {}
    for r in ROWS:
        if "tokens_per_s" not in r:
            continue
        key = f"{r['config']}_T{r['seq_len']}_B{r['micro_batch']}"
        if key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]:
            best[key] = {k: r[k] for k in ("mode", "tokens_per_s", "mfu", "peak_gib",
                                           "recompute_attention") if k in r}
    print(json.dumps({"config": "best", "rows": best}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="anchor,lizard,distill")
    ap.add_argument("--mbs", default="1,4")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile", default="auto", choices=["auto", "off"])
    ap.add_argument("--layers", type=int, default=32, help="fewer layers for a smoke run")
    ap.add_argument("--check-only", action="store_true", help="only the lizard_mix self-check")
    args = ap.parse_args()
    try:
        ok = self_check()
    except Exception as e:  # noqa: BLE001
        log(traceback.format_exc())
        print(json.dumps({"config": "self_check", "error": f"{type(e).__name__}: {e}"[:500]}),
              flush=True)
        ok = False
    if args.check_only:
        sys.exit(0 if ok else 1)
    import transformers
    extra = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
             "transformers": transformers.__version__}
    model, cfg = build_model(args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    model, lora_kind = add_lora(model)
    extra["lora"] = lora_kind
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    layers = decoder(model).layers
    softmax_attn = [layer.self_attn for layer in layers]
    mbs = [int(m) for m in args.mbs.split(",") if m]
    compiled = None
    for name in args.configs.split(","):
        modes = ["eager"]
        if name in ("lizard", "distill"):
            if args.compile == "auto":
                modes.append("compile")
            for layer, sa in zip(layers, softmax_attn):
                layer.self_attn = LizardAttention(sa, lizard_mix)
                layer.self_attn.liz.requires_grad_(name == "distill")
        else:
            for layer, sa in zip(layers, softmax_attn):
                layer.self_attn = sa
        for mode in modes:
            if mode == "compile":
                try:
                    if compiled is None:
                        compiled = torch.compile(lizard_mix, dynamic=False)
                    for layer in layers:
                        layer.self_attn.mix = compiled
                except Exception as e:  # noqa: BLE001
                    emit({"config": name, "mode": mode, "error": f"torch.compile: {e}"}, extra)
                    continue
            for mb in mbs:
                for recompute in (False, True):
                    if name != "anchor":
                        for layer in layers:
                            layer.self_attn.recompute = recompute
                    elif recompute:
                        break
                    try:
                        row = run_config(name, model, cfg, n_params, n_lora, args.seq, mb, args, mode)
                        row["recompute_attention"] = recompute
                        emit(row, extra)
                        break
                    except torch.OutOfMemoryError:
                        emit({"config": name, "mode": mode, "seq_len": args.seq,
                              "micro_batch": mb, "recompute_attention": recompute,
                              "error": "out of memory"}, extra)
                    except Exception as e:  # noqa: BLE001
                        log(traceback.format_exc())
                        emit({"config": name, "mode": mode, "seq_len": args.seq,
                              "micro_batch": mb, "error": f"{type(e).__name__}: {e}"[:500]}, extra)
                        break
                    finally:
                        for p in model.parameters():
                            p.grad = None
                        torch.cuda.empty_cache()
            for layer in layers:
                if isinstance(layer.self_attn, LizardAttention):
                    layer.self_attn.mix = lizard_mix
    emit_best()


if __name__ == "__main__":
    main()
