#!/usr/bin/env python3
"""Builds the Hugging Face fixtures that tests/io (and the model tests) compare against.

Run on a machine with torch, transformers (5.x) and tokenizers; no network is needed:
    python3 scripts/make_hf_fixtures.py [--out tests/fixtures/hf]

Writes, under --out:
  tok_<kind>/tokenizer.json + samples.json     kind in llama3, qwen2 (byte-level BPE with the
      Llama-3 / Qwen2 split regex), llama2 (byte-fallback BPE, Prepend/Replace normalizer) and
      metaspace (byte-fallback BPE, Metaspace pre-tokenizer, Mistral-v0.3 style).
      samples.json: {"samples": [{"text", "ids", "ids_with_special", "decoded"}]}, ids from
      `tokenizers` itself.
  <model>/config.json (transformers 5 dialect, save_pretrained), config_v4.json (transformers 4
      dialect: top-level rope_theta / rope_scaling), model.safetensors, tokenizer.json,
      expected.json {input_ids, logits_file, greedy_prompt, greedy_ids, ppl_ids, perplexity},
      logits.safetensors {"logits": [1, T, V] fp32}.
  models: llama, llama3_rope (llama3 rope scaling), mistral_swa (sliding window 8),
      qwen2 (q/k/v bias), llama_tied (tie_word_embeddings).
"""
import argparse
import json
import os
import shutil

TEXT = """The quick brown fox jumps over the lazy dog. It's 2024, and we'll see what they've done.
Linear attention replaces softmax with a kernel feature map; gated decay keeps recent tokens.
Numbers: 3.14159, 1234567890, 42nd street, 7 days a week, 100% sure, $19.99 each.
Unicode: café, naïve, Zürich, São Paulo, Ελληνικά, русский текст, 日本語のテキスト, 中文字符, 한국어.
Emoji 🙂🚀 and symbols ©®™ — “quotes” ‘single’ … done.
Code: def f(x):\n    return x**2  # square\n\tif a != b: print("hi")
Whitespace   runs   and\ttabs\n\n\nnewlines   \n  indented line
""" * 3

SAMPLES = [
    "Hello world",
    "Hello, World! HELLO world.",
    "  leading spaces and trailing   ",
    "It's I'M we'LL they'Ve she'd",
    "numbers 1 12 123 1234 12345 3.14159 2024-11-27",
    "café naïve Zürich e\u0301 (combining accent)",
    "日本語のテキスト 中文字符 한국어",
    "emoji 🙂🚀 👩‍💻 done",
    "tabs\tand\nnewlines\n\n\nend",
    "line one\r\nline two \n  indented",
    "symbols: ©®™ — “quotes” … <>[]{}",
    "<s> not special? </s>",
    "",
    " ",
    "\n",
    "x",
    "ǅ ſtraße ꙮ \u00a0nbsp\u2003em space",
    "<|begin_of_text|>Hello<|end_of_text|> after",
    "<|endoftext|> and <|im_start|>user\nhi<|im_end|>",
]

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
            r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_byte_level(kind, vocab_size=512):
    from tokenizers import Tokenizer, Regex, models, normalizers, pre_tokenizers, decoders, \
        processors, trainers
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    pattern = LLAMA3_RE if kind == "llama3" else QWEN2_RE
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    if kind == "llama3":
        special = ["<|begin_of_text|>", "<|end_of_text|>"]
    else:
        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_byte_fallback(kind, vocab_size=512):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, processors, \
        trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Train with a Metaspace split so merges stay inside words, as sentencepiece's do.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    special = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 259, special_tokens=special,
                                  show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    # Like Llama-2: <0xNN> are ordinary vocab entries, not added (special) tokens, so decoding
    # with skip_special_tokens keeps them. The trainer put them in the vocab; drop them from
    # added_tokens.
    j = json.loads(tok.to_str())
    j["added_tokens"] = [a for a in j["added_tokens"] if not a["content"].startswith("<0x")]
    tok = Tokenizer.from_str(json.dumps(j))
    if kind == "llama2":
        # The Llama-2 layout: no pre-tokenizer, "▁" added by the normalizer.
        tok.pre_tokenizer = None
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return tok


def write_tokenizer_fixture(out, name, tok):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    samples = []
    for s in SAMPLES + [TEXT[:2000]]:
        ids = tok.encode(s, add_special_tokens=False).ids
        samples.append({
            "text": s,
            "ids": ids,
            "ids_with_special": tok.encode(s, add_special_tokens=True).ids,
            "decoded": tok.decode(ids, skip_special_tokens=True),
        })
    with open(os.path.join(d, "samples.json"), "w", encoding="utf-8") as f:
        json.dump({"samples": samples}, f, ensure_ascii=False, indent=1)
    return os.path.join(d, "tokenizer.json")


def v4_config(cfg):
    """transformers-4 dialect: top-level rope_theta and rope_scaling instead of rope_parameters."""
    c = dict(cfg)
    rp = c.pop("rope_parameters", None)
    if rp is not None:
        rp = dict(rp)
        c["rope_theta"] = rp.pop("rope_theta", 10000.0)
        if rp.get("rope_type", "default") == "default":
            c["rope_scaling"] = None
        else:
            c["rope_scaling"] = rp
    c.pop("layer_types", None)
    c["transformers_version"] = "4.46.0"
    return c


def make_model(out, name, tok_path, tok, build):
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(1234)
    model = build().eval()
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    shutil.copy(tok_path, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(d, "config_v4.json"), "w") as f:
        json.dump(v4_config(cfg), f, indent=2)

    text = SAMPLES[1] + " " + SAMPLES[5] + " " + SAMPLES[4]
    ids = tok.encode(text, add_special_tokens=True).ids[:48]
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits.float()
        prompt = ids[:8]
        # An explicit all-ones mask: bos may share its id with pad_token_id, and generate would
        # otherwise infer a mask that hides the bos token.
        gen = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=32, do_sample=False, min_new_tokens=32, pad_token_id=0)
        ppl_ids = tok.encode(TEXT[:1500], add_special_tokens=True).ids[:128]
        y = torch.tensor([ppl_ids])
        out_ppl = model(y, labels=y)
        ppl = float(torch.exp(out_ppl.loss))
    save_file({"logits": logits.contiguous()}, os.path.join(d, "logits.safetensors"))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"input_ids": ids, "logits_file": "logits.safetensors",
                   "greedy_prompt": prompt, "greedy_ids": gen[0].tolist(),
                   "ppl_ids": ppl_ids, "perplexity": ppl}, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "fixtures", "hf"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    toks = {
        "llama3": train_byte_level("llama3"),
        "qwen2": train_byte_level("qwen2"),
        "llama2": train_byte_fallback("llama2"),
        "metaspace": train_byte_fallback("metaspace"),
    }
    paths = {k: write_tokenizer_fixture(out, "tok_" + k, t) for k, t in toks.items()}

    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, \
        Qwen2Config, Qwen2ForCausalLM

    def common(tok):
        return dict(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=160,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=256, rms_norm_eps=1e-5)

    import transformers
    v5 = int(transformers.__version__.split(".")[0]) >= 5

    def rope(theta, **scaling):
        # transformers 5 takes rope_parameters; 4 takes rope_theta (+ rope_scaling).
        if v5:
            return {"rope_parameters": dict(rope_type=scaling.pop("rope_type", "default"),
                                            rope_theta=theta, **scaling)}
        return {"rope_theta": theta, "rope_scaling": scaling or None}

    t3, tq, t2, tm = toks["llama3"], toks["qwen2"], toks["llama2"], toks["metaspace"]
    models = {
        "llama": (paths["llama3"], t3, lambda: LlamaForCausalLM(LlamaConfig(
            **common(t3), **rope(500000.0), bos_token_id=t3.token_to_id("<|begin_of_text|>"),
            eos_token_id=t3.token_to_id("<|end_of_text|>")))),
        "llama3_rope": (paths["llama3"], t3, lambda: LlamaForCausalLM(LlamaConfig(
            **common(t3), **rope(500000.0, rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=32)))),
        "mistral_swa": (paths["metaspace"], tm, lambda: MistralForCausalLM(MistralConfig(
            **common(tm), **rope(10000.0), sliding_window=8, head_dim=16))),
        "qwen2": (paths["qwen2"], tq, lambda: Qwen2ForCausalLM(Qwen2Config(
            **common(tq), **rope(1000000.0)))),
        "llama_tied": (paths["llama2"], t2, lambda: LlamaForCausalLM(LlamaConfig(
            **common(t2), **rope(10000.0), tie_word_embeddings=True, bos_token_id=1, eos_token_id=2))),
    }
    for name, (tp, tok, build) in models.items():
        make_model(out, name, tp, tok, build)
        print("wrote", os.path.join(out, name))
    print("fixtures in", out)


if __name__ == "__main__":
    main()
