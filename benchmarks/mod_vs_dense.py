"""MoD vs dense, measured side by side in one run: training step time, peak training memory, FLOPs, KV-cache bytes.

    python benchmarks/mod_vs_dense.py [--frames 200] [--steps 6] [--device cpu|cuda] [--dtype float32|bfloat16]

The model is `presets.benchmark_config()` (8-layer, 512-wide Llama, MLP 1792; 10 tokens per frame; odd layers routed at
r = 0.2, the paper's Interleaved layout) against the same model with `mod_layers=[]`. A training step is forward +
backward + AdamW on one vision-heavy stream (`--frames` frames joined by interval tokens, a short narration after
every 4th frame) with pre-computed frame features, as the original trains. Steps alternate between the two models
so that machine noise hits both alike; times are medians. Peak memory is measured per variant in a fresh process
(growth of peak RSS over the loaded model on CPU,
`max_memory_allocated` on CUDA). FLOPs come from `torch.utils.flop_counter.FlopCounterMode`.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers.utils import logging

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from videollm_mod.presets import TINY_IDS, benchmark_config

FRAME_TOKENS = 10


def vision_heavy_stream(num_frames: int, vocab_size: int, seed: int = 0):
    """(1, L) ids, (1, L) labels and (T, 10, D) features: frames joined by the interval token, narration every 4th."""
    g = torch.Generator().manual_seed(seed)
    ids = [TINY_IDS["bos"], 20, 21, 22]
    for f in range(num_frames):
        ids += [TINY_IDS["video"]] * FRAME_TOKENS
        if f % 4 == 3:
            ids += [TINY_IDS["response"]] + torch.randint(20, vocab_size, (6,), generator=g).tolist()
            ids += [TINY_IDS["eos"]]
        elif f < num_frames - 1:
            ids += [TINY_IDS["interval"]]
    input_ids = torch.tensor([ids])
    labels = input_ids.masked_fill(input_ids == TINY_IDS["video"], -100)
    return input_ids, labels


def build(variant: str, device: str, dtype: torch.dtype) -> VideoLLMMoDForCausalLM:
    config = benchmark_config() if variant == "mod" else benchmark_config(mod_layers=[])
    torch.manual_seed(0)
    return VideoLLMMoDForCausalLM(config).to(device=device, dtype=dtype).train()


def inputs_for(model, num_frames: int, device: str, dtype: torch.dtype) -> dict:
    input_ids, labels = vision_heavy_stream(num_frames, model.config.text_config.vocab_size)
    features = torch.randn(num_frames, FRAME_TOKENS, model.config.vision_config.hidden_size)
    return {
        "input_ids": input_ids.to(device),
        "labels": labels.to(device),
        "frame_features": features.to(device=device, dtype=dtype),
        "use_cache": False,
    }


def train_step(model, optimizer, inputs) -> None:
    model(**inputs).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_child(variant: str, frames: int, device: str, dtype_name: str) -> None:
    """Run in a fresh process: one warm-up step and one measured step; print the peak as JSON."""
    dtype = getattr(torch, dtype_name)
    model = build(variant, device, dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    inputs = inputs_for(model, frames, device, dtype)
    if device == "cuda":
        train_step(model, optimizer, inputs)  # allocates the optimizer state, as in any later step
        torch.cuda.reset_peak_memory_stats()
        train_step(model, optimizer, inputs)
        peak = torch.cuda.max_memory_allocated()
    else:
        # Growth of the process's peak RSS over its RSS with model and inputs loaded: activations, gradients,
        # optimizer state and kernel workspace (the interpreter and torch itself are left out).
        loaded = resident_bytes("VmRSS")
        train_step(model, optimizer, inputs)
        train_step(model, optimizer, inputs)
        peak = resident_bytes("VmHWM") - loaded
    print(json.dumps({"peak_bytes": peak}))


def resident_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc (reset at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def measure_peak_memory(variant: str, args) -> int:
    cmd = [sys.executable, __file__, "--child-peak", variant, "--frames", str(args.frames)]
    cmd += ["--device", args.device, "--dtype", args.dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]


def count_flops(model, inputs) -> int:
    # Eager attention: its matmuls are counted, while the CPU SDPA kernel is invisible to the FLOP counter.
    model.set_attn_implementation("eager")
    with FlopCounterMode(display=False) as counter:
        model(**inputs).loss.backward()
    model.zero_grad(set_to_none=True)
    model.set_attn_implementation("sdpa")
    return counter.get_total_flops()


def kv_cache_bytes_per_frame(model, num_frames: int, device: str, dtype: torch.dtype) -> float:
    """Stream `num_frames` frames (each with its interval token) through the cache; bytes of K/V per frame."""
    model.eval()
    cache = None
    features = torch.randn(
        num_frames, FRAME_TOKENS, model.config.vision_config.hidden_size, device=device, dtype=dtype
    )
    frame_ids = torch.tensor([[TINY_IDS["video"]] * FRAME_TOKENS + [TINY_IDS["interval"]]], device=device)
    with torch.no_grad():
        for f in range(num_frames):
            cache = model(input_ids=frame_ids, frame_features=features[f : f + 1], cache=cache, use_cache=True).cache
    model.train()
    total = sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers)
    return total / num_frames


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child-peak", choices=["dense", "mod"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_peak:
        return peak_memory_child(args.child_peak, args.frames, args.device, args.dtype)

    logging.set_verbosity_error()  # set_attn_implementation warns about the text sub-config at each switch
    dtype = getattr(torch, args.dtype)
    models = {v: build(v, args.device, dtype) for v in ("dense", "mod")}
    optimizers = {v: torch.optim.AdamW(m.parameters(), lr=1e-5) for v, m in models.items()}
    inputs = {v: inputs_for(m, args.frames, args.device, dtype) for v, m in models.items()}
    seq_len = inputs["dense"]["input_ids"].shape[1]
    print(f"config: 8 layers x 512 hidden, mod_layers={models['mod'].config.mod_layers}, r=0.2 (k=2 of 10)")
    print(f"stream: {args.frames} frames, {seq_len} tokens ({args.frames * FRAME_TOKENS} vision), {args.device}")

    times = {"dense": [], "mod": []}
    for step in range(args.steps + 1):  # step 0 warms up both
        for variant in ("dense", "mod") if step % 2 == 0 else ("mod", "dense"):
            sync(args.device)
            start = time.perf_counter()
            train_step(models[variant], optimizers[variant], inputs[variant])
            sync(args.device)
            if step:
                times[variant].append(time.perf_counter() - start)
    step_time = {v: statistics.median(t) for v, t in times.items()}
    flops = {v: count_flops(models[v], inputs[v]) for v in models}
    memory = {v: measure_peak_memory(v, args) for v in models}
    kv = {v: kv_cache_bytes_per_frame(models[v], 16, args.device, dtype) for v in models}
    layers, routed = 8, len(models["mod"].config.mod_layers)
    kv_arithmetic = ((layers - routed) * (FRAME_TOKENS + 1) + routed * (2 + 1)) / (layers * (FRAME_TOKENS + 1))

    rows = [
        ("train step time (s, median)", step_time),
        ("train FLOPs (fwd+bwd)", flops),
        ("peak train memory (bytes)*", memory),
        ("KV-cache bytes per frame", kv),
    ]
    print(f"{'':32}{'dense':>16}{'mod':>16}{'mod/dense':>12}")
    for name, values in rows:
        print(f"{name:32}{values['dense']:>16.4g}{values['mod']:>16.4g}{values['mod'] / values['dense']:>12.3f}")
    time_ratio, flop_ratio = step_time["mod"] / step_time["dense"], flops["mod"] / flops["dense"]
    print(f"step-time ratio / FLOP ratio = {time_ratio / flop_ratio:.3f} (1.0 = time follows FLOPs)")
    print("* CPU: peak RSS growth over the loaded model (activations, grads, AdamW state); CUDA: max allocated")
    print(f"KV bytes per frame, arithmetic ratio ((L-m)*11 + m*3) / (L*11) = {kv_arithmetic:.3f}")


if __name__ == "__main__":
    main()
