#!/usr/bin/env python3
"""MQAR learnability in PyTorch + transformers, as an outside reference for the demo's teacher.

Trains a Hugging Face LlamaForCausalLM of the demo teacher's shape (configs/demo.yaml: 4 x 256,
8 heads, 4 KV heads, head_dim 32, vocabulary 288) on MQAR sequences of the demo's format
(src/eval/mqar.cpp: <bos>, N key-value pairs at positions 1..2N, then N queries "key value"
spread over the rest with filler between them; the loss only on the answers) and prints the
query accuracy on fresh sequences. If this reaches high accuracy where `lizard train` plateaus on
the same task, the difference is ours; if it plateaus too, the task/recipe is the limit.

  python3 scripts/hf/mqar_torch_reference.py [--steps 6000] [--batch 64] [--lr 1e-3] [--pairs 8]
      [--hide-answers] [--dense] [--arch llama|gpt2] [--layers --hidden --heads --kv-heads]
      [--rope-theta] [--fp32] [--clip] [--wd] [--tag NAME]
Prints the accuracy on 64 fresh sequences every 1000 steps and the final accuracy on 256.
"""
import argparse
import json
import math
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PAD, BOS, FILLER = 0, 1, 2
KEY0, NKEYS = 96, 64          # any disjoint id ranges inside the 288-token vocabulary
VAL0, NVALS = 160, 64


def sample(rng, seq_len, pairs, hide_answers=False, dense=False, queries=0, random_filler=False):
    """One sequence; queries 0: each key once in random order, else that many keys drawn with
    replacement; random_filler: the filler between queries is random non key/value tokens."""
    keys = rng.sample(range(NKEYS), pairs)
    vals = [rng.randrange(NVALS) for _ in range(pairs)]
    nq = queries or pairs
    toks = [FILLER] * seq_len
    if random_filler:
        toks = [rng.randrange(3, KEY0) for _ in range(seq_len)]
    toks[0] = BOS
    for i in range(pairs):
        toks[1 + 2 * i] = KEY0 + keys[i]
        toks[2 + 2 * i] = VAL0 + vals[i]
    begin = 1 + 2 * pairs
    free = seq_len - begin - 2 * nq
    assert free >= 0, "seq_len too short for the pairs and queries"
    gaps = [0] * (nq + 1)
    for _ in range(free):  # dense: every query right after the pairs, the filler at the end
        gaps[nq if dense else rng.randrange(nq + 1)] += 1
    order = list(range(pairs))
    rng.shuffle(order)
    if queries:
        order = [rng.randrange(pairs) for _ in range(nq)]
    p = begin
    out = []  # (position of the query key, answer id, distance)
    for q in range(nq):
        p += gaps[q]
        i = order[q]
        toks[p] = KEY0 + keys[i]
        # hide_answers (Zoology's layout): the answer is only a label, never the next input
        toks[p + 1] = (rng.randrange(3, KEY0) if random_filler else FILLER) if hide_answers else VAL0 + vals[i]
        out.append((p, VAL0 + vals[i], p - (1 + 2 * i)))
        p += 2
    return toks, out


def batch(rng, n, seq_len, pairs, dev, hide_answers=False, dense=False, queries=0, random_filler=False,
          pairs_min=0):
    x = torch.empty(n, seq_len, dtype=torch.long)
    y = torch.full((n, seq_len), -100, dtype=torch.long)
    qs = []
    for b in range(n):
        npairs = rng.randint(pairs_min, pairs) if pairs_min else pairs  # a mixture of pair counts
        toks, qrs = sample(rng, seq_len, npairs, hide_answers, dense, queries, random_filler)
        x[b] = torch.tensor(toks)
        for (pos, ans, dist) in qrs:
            y[b, pos] = ans
        qs.append(qrs)
    return x.to(dev), y.to(dev), qs


def build_model(a, dev):
    if a.arch == "gpt2":  # learned absolute positions, no RoPE (Zoology's attention baseline)
        from transformers import GPT2Config, GPT2LMHeadModel
        cfg = GPT2Config(vocab_size=288, n_positions=a.seq_len, n_embd=a.hidden, n_layer=a.layers,
                         n_head=a.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return GPT2LMHeadModel(cfg).to(dev)
    cfg = LlamaConfig(vocab_size=288, hidden_size=a.hidden, intermediate_size=a.hidden * 688 // 256,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads or a.heads // 2, head_dim=a.hidden // a.heads,
                      max_position_embeddings=a.seq_len, rope_theta=a.rope_theta, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).to(dev)


def evaluate(model, a, dev, seed=4242, batches=4, standard=False):
    """Query accuracy on fresh sequences of the training layout, or (standard) of the demo's
    layout: each key queried once, answers revealed, filler between queries."""
    erng = random.Random(seed)
    ok = n = ok_in = n_in = 0
    with torch.no_grad():
        for _ in range(batches):
            if standard:
                x, _, qs = batch(erng, 64, a.seq_len, a.pairs, dev)
            else:
                x, _, qs = batch(erng, 64, a.seq_len, a.pairs, dev, a.hide_answers, a.dense, a.queries, a.random_filler)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=not a.fp32):
                pred = model(input_ids=x).logits.argmax(-1).cpu()
            for b, queries in enumerate(qs):
                for (pos, ans, dist) in queries:
                    hit = int(pred[b, pos].item() == ans)
                    ok += hit; n += 1
                    if dist < 16:
                        ok_in += hit; n_in += 1
    return ok, n, ok_in, n_in


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=0, help="0: heads / 2 (the demo teacher's 8/4)")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: none)")
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--dense", action="store_true", help="queries right after the pairs, filler at the end")
    ap.add_argument("--queries", type=int, default=0, help="0: each key once; else that many queries, keys drawn with replacement")
    ap.add_argument("--random-filler", action="store_true", help="random non key/value tokens instead of the filler")
    ap.add_argument("--pairs-min", type=int, default=0, help="train on pair counts drawn from [pairs-min, pairs]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--hide-answers", action="store_true",
                    help="the answer after a query is filler in the input (only a label)")
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(a.seed)
    model = build_model(a, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=a.wd)
    warm = max(1, a.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, a.steps - warm))))
    rng = random.Random(a.seed)
    t0 = time.time()
    for step in range(1, a.steps + 1):
        x, y, _ = batch(rng, a.batch, a.seq_len, a.pairs, dev, a.hide_answers, a.dense, a.queries, a.random_filler,
                        a.pairs_min)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=not a.fp32):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, 288), y.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        sched.step()
        if step % 1000 == 0 or step == a.steps:
            model.eval()
            ok, n, _, _ = evaluate(model, a, dev, seed=777, batches=1)
            model.train()
            print(json.dumps({"tag": a.tag, "step": step, "loss": round(loss.item(), 4), "acc": round(ok / n, 4),
                              "s": round(time.time() - t0, 1)}), flush=True)
    model.eval()
    ok, n, ok_in, n_in = evaluate(model, a, dev)
    sok, sn, _, _ = evaluate(model, a, dev, standard=True)
    print(json.dumps({"task": "mqar_torch_reference", "tag": a.tag, "arch": a.arch, "pairs": a.pairs,
                      "seq_len": a.seq_len, "steps": a.steps, "batch": a.batch, "lr": a.lr, "layers": a.layers,
                      "hidden": a.hidden, "heads": a.heads, "fp32": a.fp32, "clip": a.clip, "dense": a.dense, "pairs_min": a.pairs_min, "queries": a.queries, "random_filler": a.random_filler,
                      "hide_answers": a.hide_answers, "queries": n, "accuracy": ok / n,
                      "inside": n_in, "inside_accuracy": ok_in / max(1, n_in), "standard_layout_accuracy": sok / sn, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
