"""MoD vs dense, measured side by side in one run: training step time, peak training memory, FLOPs, KV-cache bytes.

    python benchmarks/mod_vs_dense.py [--frames 200] [--steps 6] [--device cpu|cuda] [--dtype float32|bfloat16]
    python benchmarks/mod_vs_dense.py --families          # FLOPs and KV-byte ratios of every decoder family
    python benchmarks/mod_vs_dense.py --lora 128 --checkpointing   # as paper_lora.yaml trains (adapters only)

The model is `presets.benchmark_config()` (8-layer, 512-wide Llama, MLP 1792; 10 tokens per frame; odd layers routed at
r = 0.2, the paper's Interleaved layout) against the same model with `mod_layers=[]`. A training step is forward +
backward (with the SFT recipe's loss) + AdamW on one vision-heavy stream (`--frames` frames joined by interval tokens,
a short narration after every 4th frame: `costs.narration_stream`) with pre-computed frame features, as the original
trains. How each cost is measured (interleaved steps and medians, FLOPs with eager attention, peak memory in a fresh
process): `videollm_mod.recipes.costs`.
"""

import argparse

import torch

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from modeling_videollm_mod.configuration_videollm_mod import TEXT_MODEL_TYPES
from videollm_mod.presets import TINY_IDS, benchmark_config
from videollm_mod.recipes.costs import (
    count_flops,
    interleaved_step_times,
    kv_bytes_by_frame,
    narration_stream,
    peak_training_memory,
    with_trainers_loss,
)

FRAME_TOKENS = 10
NARRATE_EVERY = 4  # a narration after every 4th frame (`costs.narration_stream`)


def build(variant: str, device: str, dtype: torch.dtype, family: str = "llama") -> VideoLLMMoDForCausalLM:
    routing = {} if variant == "mod" else {"mod_layers": []}
    config = benchmark_config(text_model_type=family, **routing)
    torch.manual_seed(0)
    return VideoLLMMoDForCausalLM(config).to(device=device, dtype=dtype).train()


def inputs_for(model, num_frames: int, device: str, dtype: torch.dtype) -> dict:
    stream = narration_stream(model.config, num_frames, NARRATE_EVERY)
    stream["frame_features"] = stream["frame_features"].to(dtype)
    # the loss the SFT recipe trains with: TRL's fused LM head over the labelled positions
    return with_trainers_loss(model, {**{k: v.to(device) for k, v in stream.items()}, "use_cache": False})


def kv_cache_bytes_per_frame(model, num_frames: int, device: str, dtype: torch.dtype) -> float:
    """Bytes of K/V per frame after `num_frames` frames (each with its interval token) streamed through the cache."""
    features = torch.randn(
        num_frames, FRAME_TOKENS, model.config.vision_config.hidden_size, device=device, dtype=dtype
    )
    return kv_bytes_by_frame(model, features, TINY_IDS["video"], TINY_IDS["interval"])[-1] / num_frames


def family_ratios(frames: int, device: str, dtype: torch.dtype) -> dict[str, tuple[float, float]]:
    """family -> (FLOPs, KV bytes per frame) of MoD / dense at the benchmark layout, each family's stock layers."""
    out = {}
    for family in TEXT_MODEL_TYPES:
        models = {v: build(v, device, dtype, family) for v in ("dense", "mod")}
        flops = {v: count_flops(m, inputs_for(m, frames, device, dtype)) for v, m in models.items()}
        kv = {v: kv_cache_bytes_per_frame(m, 16, device, dtype) for v, m in models.items()}
        out[family] = (flops["mod"] / flops["dense"], kv["mod"] / kv["dense"])
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--families", action="store_true", help="only the FLOPs and KV ratios of every family")
    parser.add_argument(
        "--lora",
        type=int,
        default=0,
        metavar="RANK",
        help="train the recipe's LoRA adapters of this rank (the paper's: 128) instead of every weight",
    )
    parser.add_argument("--checkpointing", action="store_true", help="with activation checkpointing (paper_lora.yaml)")
    args = parser.parse_args(argv)

    dtype = getattr(torch, args.dtype)
    if args.families:
        print(f"MoD / dense at the benchmark layout (8 x 512, odd layers routed, r = 0.2), {args.frames} frames")
        print(f"{'family':10}{'FLOPs':>10}{'KV bytes':>10}")
        for family, (flops, kv) in family_ratios(args.frames, args.device, dtype).items():
            print(f"{family:10}{flops:>10.4f}{kv:>10.4f}")
        return
    models = {v: build(v, args.device, dtype) for v in ("dense", "mod")}
    inputs = {v: inputs_for(m, args.frames, args.device, dtype) for v, m in models.items()}
    seq_len = inputs["dense"]["input_ids"].shape[1]
    print(f"config: 8 layers x 512 hidden, mod_layers={models['mod'].config.mod_layers}, r=0.2 (k=2 of 10)")
    print(f"stream: {args.frames} frames, {seq_len} tokens ({args.frames * FRAME_TOKENS} vision), {args.device}")

    kv = {v: kv_cache_bytes_per_frame(models[v], 16, args.device, dtype) for v in models}
    configs = {v: model.config for v, model in models.items()}
    if args.checkpointing:
        for model in models.values():
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if args.lora:
        from videollm_mod.recipes.sharded_training import with_lora

        models = {v: with_lora(model, args.lora) for v, model in models.items()}
    print(f"training: {f'LoRA r = {args.lora}' if args.lora else 'every weight'}, checkpointing "
          f"{'on' if args.checkpointing else 'off'}")  # fmt: skip

    step_time = interleaved_step_times(models, inputs, args.steps)
    flops = {v: count_flops(models[v], inputs[v]) for v in models}
    memory = {
        v: peak_training_memory(configs[v], inputs[v], args.device, args.dtype, checkpointing=args.checkpointing,
                                trainers_loss=True, lora_rank=args.lora)
        for v in models
    }  # fmt: skip
    layers, routed = 8, len(configs["mod"].mod_layers)
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
    print(
        "* CPU: peak growth of tensor bytes over the loaded model (activations, grads, AdamW state); CUDA: max allocated"
    )
    print(f"KV bytes per frame, arithmetic ratio ((L-m)*11 + m*3) / (L*11) = {kv_arithmetic:.3f}")


if __name__ == "__main__":
    main()
