"""Streaming latency and KV-cache size, MoD vs dense, measured side by side in one run (ratios, not absolute times).

    python benchmarks/streaming_latency.py --frames 120 --repeats 3

At `presets.benchmark_config()` (8-layer 512-wide Llama, 10 tokens per frame, odd layers routed, r = 0.2) a session
streams pre-computed frame features with threshold 0 (never speaks, so only frames are timed):
- per-frame latency MoD / dense (frame-by-frame sessions, best of `--repeats`, runs interleaved);
- cache bytes after N frames, measured vs the arithmetic ratio (dense layers cache every token, routed layers the
  text + k vision tokens per frame);
- chunked (`--chunk-size` frames per forward) vs frame-by-frame, for the MoD model, and MoD / dense when chunked.
"""

import argparse
import time

import torch

from modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
from videollm_mod.presets import benchmark_config
from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids


def cache_bytes(cache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers if layer.keys is not None)


def stream_seconds(model, processor, features, chunk_size: int = 1) -> tuple[float, object]:
    session = model.stream_session(processor, threshold=0.0, chunk_size=chunk_size)
    times = [i / 2 for i in range(features.shape[0])]
    start = time.perf_counter()
    session.push_frames(features=features, times=times)
    return time.perf_counter() - start, session


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=8)
    args = parser.parse_args(argv)

    tokenizer = build_stream_tokenizer(["#C C sees a red circle appear"], vocab_size=200)
    processor = VideoLLMMoDProcessor(VideoLLMMoDFrameProcessor(size=24), tokenizer, frame_num_tokens=10)
    models = {}
    for name, mod_layers in (("dense", []), ("mod", None)):
        torch.manual_seed(0)
        config = benchmark_config(mod_layers=mod_layers, **stream_token_ids(tokenizer))
        models[name] = VideoLLMMoDForCausalLM(config).eval()
    config = models["mod"].config
    features = torch.randn(args.frames, config.frame_num_tokens, config.vision_config.hidden_size)

    best = {name: float("inf") for name in (*models, "dense-chunked", "mod-chunked")}
    sessions = {}
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        for name, model in models.items():
            seconds, sessions[name] = stream_seconds(model, processor, features)
            best[name] = min(best[name], seconds)
        for name, model in models.items():
            seconds, _ = stream_seconds(model, processor, features, chunk_size=args.chunk_size)
            best[f"{name}-chunked"] = min(best[f"{name}-chunked"], seconds)

    total = sessions["dense"].num_tokens
    frame_tokens = args.frames * config.frame_num_tokens
    layers, routed = config.text_config.num_hidden_layers, len(config.mod_layers)
    routed_len = total - frame_tokens + args.frames * config.mod_keep_per_frame
    arithmetic = ((layers - routed) * total + routed * routed_len) / (layers * total)
    measured = cache_bytes(sessions["mod"].cache) / cache_bytes(sessions["dense"].cache)

    print(
        f"benchmark_config: {layers} layers ({routed} routed, k={config.mod_keep_per_frame} of "
        f"{config.frame_num_tokens}), hidden {config.text_config.hidden_size}; {args.frames} frames, {total} tokens"
    )
    for name in best:
        print(f"  {name:<12} {1000 * best[name] / args.frames:8.2f} ms/frame")
    print(f"per-frame latency MoD / dense:              {best['mod'] / best['dense']:.3f}  (target <= 0.75)")
    print(f"per-frame latency MoD / dense, chunked:     {best['mod-chunked'] / best['dense-chunked']:.3f}")
    print(f"chunked ({args.chunk_size}) / frame-by-frame (MoD):    {best['mod-chunked'] / best['mod']:.3f}")
    print(f"cache bytes MoD / dense: measured {measured:.4f}, arithmetic {arithmetic:.4f}")


if __name__ == "__main__":
    main()
