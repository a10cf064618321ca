"""Streaming latency and KV cache, MoD vs dense, measured side by side in one run (ratios, not absolute times).

    python benchmarks/streaming_latency.py --frames 60 --repeats 5 [--profile]

At `presets.benchmark_config()` (8-layer 512-wide Llama, 10 tokens per frame, odd layers routed, r = 0.2), made to
stay silent (`stream_models.py`) so that only frames are timed, a session streams `--frames` pre-computed frames:
- per-frame latency MoD / dense, one frame per forward (a live stream; runs interleaved, medians);
- the same with automatic chunks (recorded video), and chunks / frame-by-frame for MoD;
- cache bytes after the stream, measured vs the arithmetic ratio (dense layers cache every token, routed layers the
  text + k vision tokens per frame);
- `--profile`: where the time of a frame-by-frame stream goes (torch.profiler, operators by self CPU time).
"""

import argparse
import statistics
import time

from stream_models import benchmark_processor, frame_features, parse_with_threads, silent_benchmark_model
from torch.profiler import ProfilerActivity, profile


def cache_bytes(cache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers if layer.keys is not None)


def stream_seconds(model, processor, features, chunk_size) -> tuple[float, object]:
    session = model.stream_session(processor, threshold=0.0, chunk_size=chunk_size)
    times = [i / 2 for i in range(features.shape[0])]
    start = time.perf_counter()
    session.push_frames(features=features, times=times)
    return time.perf_counter() - start, session


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the operators that take the time")
    args = parse_with_threads(parser, argv)

    processor = benchmark_processor()
    models = {name: silent_benchmark_model(processor, layers) for name, layers in (("dense", []), ("mod", None))}
    features = frame_features(models["mod"], args.frames)
    variants = {f"{name}-{chunk}": (model, chunk) for chunk in (1, "auto") for name, model in models.items()}

    seconds, sessions = {name: [] for name in variants}, {}
    for round_ in range(args.repeats + 1):  # round 0 warms up; variants interleaved, so machine load hits all alike
        for name, (model, chunk) in variants.items():
            elapsed, sessions[name] = stream_seconds(model, processor, features, chunk)
            if round_:
                seconds[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in seconds.items()}

    config = models["mod"].config
    total = sessions["dense-1"].num_tokens
    frame_tokens = args.frames * config.frame_num_tokens
    layers, routed = config.text_config.num_hidden_layers, len(config.mod_layers)
    routed_len = total - frame_tokens + args.frames * config.mod_keep_per_frame
    arithmetic = ((layers - routed) * total + routed * routed_len) / (layers * total)
    measured = cache_bytes(sessions["mod-1"].cache) / cache_bytes(sessions["dense-1"].cache)

    print(
        f"benchmark_config: {layers} layers ({routed} routed, k={config.mod_keep_per_frame} of "
        f"{config.frame_num_tokens}), hidden {config.text_config.hidden_size}; {args.frames} frames, {total} tokens"
    )
    for name in median:
        print(f"  {name:<11} {1000 * median[name] / args.frames:8.2f} ms/frame")
    print(f"per-frame latency MoD / dense, frame by frame:  {median['mod-1'] / median['dense-1']:.3f}")
    print(f"per-frame latency MoD / dense, automatic chunks: {median['mod-auto'] / median['dense-auto']:.3f}")
    print(f"automatic chunks / frame by frame (MoD):         {median['mod-auto'] / median['mod-1']:.3f}")
    print(f"cache bytes MoD / dense: measured {measured:.4f}, arithmetic {arithmetic:.4f}")

    if args.profile:
        for name, model in models.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                stream_seconds(model, processor, features, 1)
            print(f"\n{name}, frame by frame: operators by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
