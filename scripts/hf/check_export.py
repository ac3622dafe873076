#!/usr/bin/env python3
"""Checks a lizard export against Hugging Face transformers.

    check_export.py EXPORT_DIR LOGITS.safetensors      # logits written by `lizard logits`
    check_export.py EXPORT_DIR --compare-with-lizard [--lizard build/bin/lizard] [--tokens "1 2 3"]

Loads EXPORT_DIR with AutoModelForCausalLM.from_pretrained(trust_remote_code=True) in float32
(an adapter export's LoRA is merged here, in float64, as peft would apply it), then
  1. compares every tensor the model holds with the export's safetensors (names, shapes, values:
     a missing or silently re-initialised tensor fails here, not as a vague logit mismatch);
  2. runs the model on the reference input ids and compares its logits with lizard's:
     max |diff| / max |lizard logit| must stay within --tol (default 2e-4: both sides compute in
     float32 with different summation orders and the chunked vs naive Lizard forms, about 1e-6
     relative; a wrong term of the maths moves logits by 1e-2 or more);
  3. (informational) greedy generate() of a few tokens against argmax of full forwards.
Exit status: 0 pass, 1 mismatch, 2 could not load / run.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
}


def read_safetensors(path):
    """name -> tensor (CPU), without the safetensors package."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = _DTYPES[info["dtype"]]
        buf = bytearray(data[base + b : base + e])
        t = torch.frombuffer(buf, dtype=dt) if len(buf) else torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def read_export_weights(export):
    index = os.path.join(export, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for fn in files:
        weights.update(read_safetensors(os.path.join(export, fn)))
    return weights


def merged_weights(export, weights):
    """The export's weights with its adapter (if any) folded in: W + (alpha / r) B A."""
    cfg_path = os.path.join(export, "adapter_config.json")
    if not os.path.exists(cfg_path):
        return weights, False
    with open(cfg_path) as f:
        ac = json.load(f)
    scale = float(ac["lora_alpha"]) / float(ac["r"])
    adapter = read_safetensors(os.path.join(export, "adapter_model.safetensors"))
    out = dict(weights)
    prefix = "base_model.model."
    for name, a in adapter.items():
        if not name.endswith(".lora_A.weight"):
            continue
        module = name[len(prefix) : -len(".lora_A.weight")]
        b = adapter[prefix + module + ".lora_B.weight"]
        w = out[module + ".weight"]
        out[module + ".weight"] = (w.double() + scale * (b.double() @ a.double())).to(torch.float32)
    return out, True


def load_model(export):
    from transformers import AutoModelForCausalLM

    common = dict(trust_remote_code=True, local_files_only=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32, **common)
    except TypeError:  # transformers 4.x before `dtype`
        model = AutoModelForCausalLM.from_pretrained(export, torch_dtype=torch.float32, **common)
    return model.float().eval()


def load_model_direct(export):
    """The export's modeling_lizard.py imported as a plain module, its weights loaded with
    load_state_dict: the maths without the AutoModel / trust_remote_code glue (a fallback that
    tells a loading problem apart from a maths problem)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lizard_export_modeling", os.path.join(export, "modeling_lizard.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(os.path.join(export, "config.json")) as f:
        cfg = json.load(f)
    model = mod.LizardForCausalLM(mod.LizardConfig(**cfg))
    weights = {k: v.float() for k, v in read_export_weights(export).items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RuntimeError("state dict: missing %s, unexpected %s" % (list(missing)[:5], list(unexpected)[:5]))
    return model.float().eval()


def run_lizard_logits(lizard, export, tokens, out):
    cmd = [lizard, "logits", "--model", export, "--tokens", tokens, "--output", out, "--device", "cpu", "--dtype", "f32"]
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(r.stdout.strip())
    if r.returncode != 0:
        raise RuntimeError("lizard logits failed with exit status %d" % r.returncode)


def default_tokens(export, n=37):
    with open(os.path.join(export, "config.json")) as f:
        vocab = int(json.load(f)["vocab_size"])
    return " ".join(str((i * 7919 + 13) % vocab) for i in range(n))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export")
    ap.add_argument("logits", nargs="?", help="safetensors written by `lizard logits`")
    ap.add_argument("--compare-with-lizard", action="store_true", help="run `lizard logits` first")
    ap.add_argument("--lizard", default=os.environ.get("LIZARD_BIN", "build/bin/lizard"))
    ap.add_argument("--tokens", default=None, help="token ids for --compare-with-lizard")
    ap.add_argument("--tol", type=float, default=2e-4, help="max |diff| / max |logit|")
    args = ap.parse_args()
    if not args.logits and not args.compare_with_lizard:
        ap.error("give LOGITS.safetensors or --compare-with-lizard")

    tmp = None
    try:
        ref_path = args.logits
        if args.compare_with_lizard:
            tmp = tempfile.mkdtemp(prefix="lizard_check_")
            ref_path = os.path.join(tmp, "logits.safetensors")
            run_lizard_logits(args.lizard, args.export, args.tokens or default_tokens(args.export), ref_path)
        ref = read_safetensors(ref_path)
        ids, ref_logits = ref["input_ids"].long(), ref["logits"].float()

        import transformers

        print("torch %s, transformers %s" % (torch.__version__, transformers.__version__))
    except Exception as e:  # noqa: BLE001 -- one clear line, exit 2
        print("FAIL (setup): %s: %s" % (type(e).__name__, e))
        return 2

    failed = False
    try:
        model = load_model(args.export)
        print("loaded %s with AutoModelForCausalLM as %s" % (args.export, type(model).__name__))
    except Exception as e:  # noqa: BLE001 -- report, then check the maths without the glue
        import traceback

        traceback.print_exc()
        print("FAIL (AutoModelForCausalLM.from_pretrained): %s: %s" % (type(e).__name__, e))
        failed = True
        try:
            model = load_model_direct(args.export)
            print("continuing with modeling_lizard.py imported directly (the maths alone)")
        except Exception as e2:  # noqa: BLE001
            traceback.print_exc()
            print("FAIL (direct load): %s: %s" % (type(e2).__name__, e2))
            return 2
    # ---- 1. tensors: the model must hold exactly the export's values (f32 upcasts are exact) ----
    raw = read_export_weights(args.export)
    state = model.state_dict()
    missing = sorted(set(raw) - set(state))
    unexpected = sorted(set(state) - set(raw))
    if missing or unexpected:
        print("FAIL (weights): in the export but not the model: %s; in the model but not the export: %s"
              % (missing[:5], unexpected[:5]))
        failed = True
    worst = 0.0
    for name in sorted(set(raw) & set(state)):
        w, s = raw[name].float(), state[name].float()
        if w.shape != s.shape:
            print("FAIL (weights): %s has shape %s in the model, %s in the export" % (name, tuple(s.shape), tuple(w.shape)))
            failed = True
            continue
        d = (w - s).abs().max().item() if w.numel() else 0.0
        worst = max(worst, d)
        if d > 0:
            print("FAIL (weights): %s differs from the export by %.3g" % (name, d))
            failed = True
    print("weights: %d tensors compared, max |diff| %.3g" % (len(raw), worst))
    merged, had_adapter = merged_weights(args.export, raw)
    if had_adapter:
        # Fold the adapter into the loaded model, as peft's merge_and_unload would.
        with torch.no_grad():
            for name, t in merged.items():
                if name in state:
                    state[name].copy_(t.to(state[name].dtype))
        print("adapter: merged W + (alpha/r) B A into the loaded model")

    # ---- 2. logits ----
    with torch.no_grad():
        out = model(input_ids=ids).logits.float()
    if out.shape != ref_logits.shape:
        print("FAIL (logits): shape %s, lizard wrote %s" % (tuple(out.shape), tuple(ref_logits.shape)))
        return 1
    diff = (out - ref_logits).abs()
    scale = ref_logits.abs().max().item()
    rel = diff.max().item() / max(scale, 1e-30)
    agree = (out.argmax(-1) == ref_logits.argmax(-1)).float().mean().item()
    ok = rel <= args.tol
    print("logits [%s]: max |diff| %.3g, max |logit| %.3g, relative %.3g (tol %.1g), argmax agreement %.1f%%: %s"
          % (", ".join(map(str, out.shape)), diff.max().item(), scale, rel, args.tol, 100 * agree,
             "PASS" if ok else "FAIL"))
    failed = failed or not ok

    # ---- 3. generate (informational) ----
    try:
        prompt = ids[:, :6]
        with torch.no_grad():
            gen = model.generate(prompt, max_new_tokens=4, do_sample=False, attention_mask=torch.ones_like(prompt))
            seq = prompt
            for _ in range(4):
                nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
        same = gen.shape == seq.shape and bool((gen == seq).all())
        print("generate: %s (greedy %s, manual %s)" % ("matches" if same else "DIFFERS (informational)",
                                                       gen[0, 6:].tolist(), seq[0, 6:].tolist()))
    except Exception as e:  # noqa: BLE001 -- informational only
        print("generate: not checked (%s: %s)" % (type(e).__name__, e))

    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT: %s" % ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
