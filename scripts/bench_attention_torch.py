#!/usr/bin/env python3
"""Times torch SDPA (causal, FlashAttention backend) at the Lizard benchmark shapes.

Prints one JSON object per shape (same keys as `bench_lizard_attention`): bf16, H=32, D=128,
median of 20 timed runs after 3 warm-ups with CUDA events; forward+backward uses a ones
gradient. Run on the GPU machine next to `lizard bench attention` so both use the same card.
"""
import json
import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [(8, 2048), (2, 8192), (1, 32768)]
H, D, WARMUP, ITERS = 32, 128, 3, 20


def timed(fn):
    times = []
    for i in range(WARMUP + ITERS):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    dev = torch.device("cuda")
    for B, T in SHAPES:
        q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        go = torch.ones(B, H, T, D, device=dev, dtype=torch.bfloat16)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            def fwd():
                with torch.no_grad():
                    torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

            def fwd_bwd():
                o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                o.backward(go)

            f, fb = timed(fwd), timed(fwd_bwd)
        print(json.dumps({"op": "torch_sdpa_causal_flash", "device": torch.cuda.get_device_name(),
                          "torch": torch.__version__, "B": B, "T": T, "H": H, "D": D,
                          "fwd_ms": round(f, 4), "fwd_bwd_ms": round(fb, 4)}), flush=True)


if __name__ == "__main__":
    main()
