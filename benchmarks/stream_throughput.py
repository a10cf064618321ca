"""Streaming throughput, measured side by side in one run (ratios of frames per second; variants interleaved, medians
of `--repeats`), each pair checked to give the same decisions and events.

    python benchmarks/stream_throughput.py                       # all three
    python benchmarks/stream_throughput.py --only narrated --repeats 5

- `silent`: a recorded stream on which the model stays silent (the benchmark model, `stream_models.py`, `--frames`
  pre-computed frames): automatic chunks (`chunk_size="auto"`, the default for recorded video) vs one frame per
  forward.
- `narrated`: held-out synthetic clips narrated by a model (`--model`, default the shipped demo) at its default
  threshold, raw frames decoded beforehand: automatic chunks vs one frame per forward (replies included).
- `batched`: `--streams` streams of `--frames` frames, one frame per stream per forward (live streams), in one
  batched session vs the same streams one at a time; benchmark model, silent, MoD and dense.
- `batched_narrated`: `--streams` held-out synthetic clips narrated by a model (`--model`, default the shipped demo),
  automatic chunks: one batched session (`stream_generate_batch`) vs the clips one at a time (`stream_generate`),
  raw frames decoded beforehand.
"""

import argparse
import statistics
import tempfile
import time
from functools import partial

import numpy as np
import torch
from stream_models import benchmark_processor, frame_features, parse_with_threads, silent_benchmark_model

from modeling_videollm_mod import load_video
from videollm_mod.loading import load_model_and_processor
from videollm_mod.narrate import render_demo_videos


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def interleaved(variants: dict, repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each variant (one warm-up run each, then `repeats` rounds in turn) and its last result."""
    seconds, results = {name: [] for name in variants}, {}
    for round_ in range(repeats + 1):
        for name, run in variants.items():
            elapsed, results[name] = timed(run)
            if round_:
                seconds[name].append(elapsed)
    return {name: statistics.median(values) for name, values in seconds.items()}, results


def decisions_match(a, b) -> bool:
    return [t for t, _ in a] == [t for t, _ in b] and np.allclose([p for _, p in a], [p for _, p in b], atol=1e-4)


def silent(args) -> None:
    processor = benchmark_processor()
    model = silent_benchmark_model(processor)
    features = frame_features(model, args.frames)
    times = [i / 2 for i in range(args.frames)]

    def stream(chunk_size):
        session = model.stream_session(processor, chunk_size=chunk_size)
        session.push_frames(features=features, times=times)
        return session

    seconds, sessions = interleaved({"frame": lambda: stream(1), "auto": lambda: stream("auto")}, args.repeats)
    same = decisions_match(sessions["frame"].decisions, sessions["auto"].decisions)
    print(f"silent stream, benchmark model (MoD), {args.frames} frames")
    for name in seconds:
        print(f"  {name:<6} {args.frames / seconds[name]:8.1f} frames/s")
    print(f"  automatic chunks / frame-by-frame: {seconds['frame'] / seconds['auto']:.2f}x  (same decisions: {same})")


def narrated(args) -> None:
    model, processor = load_model_and_processor(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        clips = [load_video(path, fps=processor.image_processor.fps) for path in render_demo_videos(folder, 2024, 2)]
    frames = sum(len(times) for _, times in clips)

    def narrate(chunk_size):
        torch.manual_seed(0)
        return [
            list(model.stream_generate(zip(times.tolist(), video, strict=True), processor, chunk_size=chunk_size))
            for video, times in clips
        ]

    seconds, events = interleaved({"frame": lambda: narrate(1), "auto": lambda: narrate("auto")}, args.repeats)
    title = f"{len(clips)} narrated clips, {args.model or 'the demo model'}, default threshold"
    report_narration(title, frames, seconds, events, "automatic chunks / frame-by-frame")


def report_narration(title: str, frames: int, seconds: dict, events: dict, ratio: str) -> None:
    """Frames per second of two variants (`seconds`: the slower first) on the same clips, their ratio, and whether
    they said the same."""
    slow, fast = seconds
    replies = sum(e.role == "assistant" for clip in events[slow] for e in clip)
    print(f"{title}: {frames} frames, {replies} replies")
    for name in seconds:
        print(f"  {name:<8} {frames / seconds[name]:8.1f} frames/s in total")
    same = events[slow] == events[fast]
    print(f"  {ratio}: {seconds[slow] / seconds[fast]:.2f}x  (same events: {same})")


def batched(args) -> None:
    processor = benchmark_processor()
    for name, mod_layers in (("MoD", None), ("dense", [])):
        model = silent_benchmark_model(processor, mod_layers)
        features = [frame_features(model, args.frames, seed=s) for s in range(args.streams)]
        times = [i / 2 for i in range(args.frames)]
        variants = {
            "alone": partial(streams_alone, model, processor, features, times),
            "batched": partial(streams_together, model, processor, features, times),
        }
        seconds, decisions = interleaved(variants, args.repeats)
        same = all(map(decisions_match, decisions["alone"], decisions["batched"]))
        total = args.streams * args.frames
        print(f"{args.streams} streams x {args.frames} frames, one frame per stream per forward, {name}")
        for variant in seconds:
            print(f"  {variant:<8} {total / seconds[variant]:8.1f} frames/s in total")
        print(f"  batched / one at a time: {seconds['alone'] / seconds['batched']:.2f}x  (same decisions: {same})")


def batched_narrated(args) -> None:
    model, processor = load_model_and_processor(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        clips = [
            load_video(p, fps=processor.image_processor.fps) for p in render_demo_videos(folder, 2025, args.streams)
        ]
    videos = [list(zip(times.tolist(), video, strict=True)) for video, times in clips]
    frames = sum(len(video) for video in videos)

    def alone():
        return [list(model.stream_generate(iter(video), processor)) for video in videos]

    def together():
        events = [[] for _ in videos]
        for r, event in model.stream_generate_batch([iter(video) for video in videos], processor):
            events[r].append(event)
        return events

    seconds, events = interleaved({"alone": alone, "batched": together}, args.repeats)
    title = f"{len(videos)} narrated clips, {args.model or 'the demo model'}, automatic chunks"
    report_narration(title, frames, seconds, events, "batched / one at a time")


def streams_alone(model, processor, features, times) -> list:
    decisions = []
    for stream in features:
        session = model.stream_session(processor)
        session.push_frames(features=stream, times=times)
        decisions.append(session.decisions)
    return decisions


def streams_together(model, processor, features, times) -> list:
    batch = model.batch_stream_session(processor, len(features))
    batch.push_frames(features=features, times=[times] * len(features))
    return [stream.decisions for stream in batch.streams]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["silent", "narrated", "batched", "batched_narrated"], default=None)
    parser.add_argument("--frames", type=int, default=200, help="frames per stream (silent, batched)")
    parser.add_argument("--streams", type=int, default=8, help="streams (batched, batched_narrated)")
    parser.add_argument("--model", default=None, help="model of the narrated clips (default: the shipped demo)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parse_with_threads(parser, argv)
    runs = (("silent", silent), ("narrated", narrated), ("batched", batched), ("batched_narrated", batched_narrated))
    for name, run in runs:
        if args.only in (None, name):
            run(args)


if __name__ == "__main__":
    main()
