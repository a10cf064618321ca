"""Bounded streams: memory, frames held per byte, the position policy and quality after eviction, in one run each.

    python benchmarks/bounded_stream.py memory   [--window 1024 --factor 20 --baseline 1]
    python benchmarks/bounded_stream.py frames   [--megabytes 8]
    python benchmarks/bounded_stream.py quality  [--model PATH_OR_REPO --windows 10 --budget 512]
    python benchmarks/bounded_stream.py defaults [--model PATH_OR_REPO --streams 2]

- `memory`: the benchmark model (`stream_models.py`, silent) streams `--baseline` budgets' worth of frames
  (`--window` tokens each) and then `--factor` budgets' worth, each in a fresh process; peak memory growth over the loaded model (peak RSS on
  CPU, with glibc's mmap threshold fixed; `max_memory_allocated` on CUDA). Frames are made as they are fed, so only
  the stream's cost is measured.
- `frames`: at one byte budget, how many frames the dense and the MoD benchmark model hold.
- `defaults`: what a user gets with no options on long videos (the session's default budget, the model's trained
  stream length): replies to `--black-seconds` of black video, and per 2-minute window of `--streams` held-out
  6-minute clips, replies per event, content accuracy and TimeDiff.
- `quality`: held-out synthetic streams `--windows` times longer than the budget (`--budget` tokens), narrated by
  `--model` (default: the shipped demo) under three cache policies: the model's whole context (4096 for the demo, so
  nothing is evicted during the first windows: the reference), the budget with re-indexed positions (the default) and
  the budget with original positions. Per window of the stream: replies per ground-truth event, content accuracy (the
  fraction of replies naming the colour, shape and action of the ground-truth event nearest in time) and TimeDiff
  (mean seconds from each event to the first reply after it, a missed event counting the time to the next one). Also
  how long each budgeted policy decides as the reference does (P(interval) on the same side of the threshold at every
  frame; the demo was trained on 24 s streams, ~600 tokens) and its mean |P(interval) - reference| until then.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import torch
from stream_models import benchmark_processor, frame_features, parse_with_threads, silent_benchmark_model

from modeling_videollm_mod import DEFAULT_THRESHOLD, CacheBudget, load_video
from videollm_mod.recipes.costs import resident_bytes

CHUNK = 32  # frames pushed at a time (memory)


# ---------------------------------------------------------------------------------------------------------------- memory
def memory_child(frames: int, window: int, device: str) -> None:
    """In a fresh process: stream `frames` frames through a `window`-token budget; print the peak growth as JSON."""
    processor = benchmark_processor()
    model = silent_benchmark_model(processor, device=device)
    session = model.stream_session(processor, chunk_size="auto", budget=CacheBudget(max_tokens=window))
    loaded = resident_bytes("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for start in range(0, frames, CHUNK):
        count = min(CHUNK, frames - start)
        session.push_frames(
            features=frame_features(model, count, seed=start), times=[(start + i) / 2 for i in range(count)]
        )
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else resident_bytes("VmHWM") - loaded
    tokens = session.held(session.streams[0])[0]
    print(json.dumps({"peak_bytes": peak, "tokens_held": tokens, "frames_fed": len(session.decisions)}))


def memory(args) -> None:
    window_frames = args.window // 11
    results = {}
    for name, frames in ((f"{args.baseline} windows", args.baseline * window_frames),
                         (f"{args.factor} windows", args.factor * window_frames)):  # fmt: skip
        cmd = [sys.executable, __file__, "memory-child", "--frames", str(frames), "--window", str(args.window)]
        # glibc raises its mmap threshold as blocks are freed and then keeps freed memory in the heap, so peak RSS
        # would also count what the allocator retains; a fixed threshold returns it, leaving what the stream uses
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
        out = subprocess.run(cmd + ["--device", args.device], check=True, capture_output=True, text=True, env=env)
        out = out.stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    print(f"benchmark model (MoD), budget {args.window} tokens (~{window_frames} frames), {args.device}")
    for name, result in results.items():
        print(
            f"  {name:<12} {result['frames_fed']:6d} frames fed, {result['tokens_held']:5d} tokens held, "
            f"peak growth {result['peak_bytes'] / 2**20:8.1f} MiB"
        )
    one, many = (result["peak_bytes"] for result in results.values())
    print(f"  peak memory, {args.factor} windows / {args.baseline}: {many / one:.3f}")


def frames_held(args) -> None:
    budget = CacheBudget(max_bytes=int(args.megabytes * 2**20))
    processor = benchmark_processor()
    held = {}
    for name, mod_layers in (("dense", []), ("MoD", None)):
        model = silent_benchmark_model(processor, mod_layers)
        session = model.stream_session(processor, chunk_size="auto", budget=budget)
        session.push_frames(features=frame_features(model, 400), times=[i / 2 for i in range(400)])
        segments = session.streams[0].segments
        held[name] = (sum(s.frames for s in segments), int(session.cache.valid_bytes()[0]))
        print(f"  {name:<6} holds {held[name][0]:4d} frames in {held[name][1] / 2**20:.2f} MiB")
    print(
        f"frames held at {args.megabytes} MiB, MoD / dense: {held['MoD'][0] / held['dense'][0]:.2f}  (target >= 1.5)"
    )


# --------------------------------------------------------------------------------------------------------------- quality
def window_scores(replies: list, events: list[dict], start: float, stop: float) -> dict:
    """Replies per event, content accuracy and TimeDiff of the replies and events in `[start, stop)` seconds."""
    from videollm_mod.data_scripts.synthetic import Event
    from videollm_mod.recipes.event_metrics import names

    times = [e["narration_time"] for e in events]
    window_replies = [r for r in replies if start <= r.time < stop]
    window_events = [e for e in events if start <= e["narration_time"] < stop]
    correct = 0
    for reply in window_replies:
        nearest = events[int(np.argmin([abs(t - reply.time) for t in times]))]
        correct += names(reply.text, Event.from_dict(nearest).chat)  # the study's scorer: colour, shape and action
    delays = []
    for event in window_events:
        following = [t for t in times if t > event["narration_time"]]
        until = min(following[0] if following else stop, stop)
        answered = [r.time for r in replies if event["narration_time"] <= r.time < until]
        delays.append((answered[0] if answered else until) - event["narration_time"])
    return {
        "replies_per_event": len(window_replies) / max(1, len(window_events)),
        "content_accuracy": correct / max(1, len(window_replies)),
        "time_diff": statistics.mean(delays) if delays else float("nan"),
    }


def quality(args) -> None:
    from videollm_mod.loading import load_model_and_processor
    from videollm_mod.narrate import render_demo_videos

    model, processor = load_model_and_processor(args.model, device=args.device)
    fps = processor.image_processor.fps
    window_seconds = args.budget / (processor.frame_num_tokens + 1) / fps
    seconds = args.windows * window_seconds
    context = model.config.text_config.max_position_embeddings
    policies = {
        f"context ({context} tokens)": CacheBudget(),
        f"budget {args.budget}, reindex": CacheBudget(max_tokens=args.budget),
        f"budget {args.budget}, original": CacheBudget(max_tokens=args.budget, positions="original"),
    }
    with tempfile.TemporaryDirectory() as folder:
        paths = render_demo_videos(folder, seed=4242, count=args.streams, seconds=seconds)
        ground_truth = json.load(open(os.path.join(folder, "synthetic", "synthetic_events.json")))
        clips = [(load_video(path, fps=fps), ground_truth[os.path.basename(path)[:-4]]) for path in paths]
    print(f"{args.model or 'the demo model'}: {args.streams} held-out streams of {seconds:.0f} s "
          f"({args.windows} windows of {window_seconds:.0f} s = {args.budget} tokens)")  # fmt: skip
    sessions = {}
    for name, budget in policies.items():
        sessions[name] = []
        rows = []
        for (video, times), events in clips:
            torch.manual_seed(0)
            session = model.stream_session(processor, chunk_size="auto", budget=budget)
            try:
                session.push_frames(video, times.tolist())
            except Exception as error:  # original positions stop at the model's context
                print(f"  {name}: stopped at t={session.streams[0].time:.1f}s: {type(error).__name__}")
            sessions[name].append(session)
            replies = [e for e in session.streams[0].events if e.role == "assistant"]
            rows.append(
                [
                    window_scores(replies, events, w * window_seconds, (w + 1) * window_seconds)
                    for w in range(args.windows)
                ]
            )
        print(f"  {name}")
        for metric in ("replies_per_event", "content_accuracy", "time_diff"):
            per_window = [statistics.mean(row[w][metric] for row in rows) for w in range(args.windows)]
            cells = " ".join(f"{value:5.2f}" for value in per_window)
            ratio = per_window[-1] / per_window[0] if per_window[0] else float("nan")
            print(f"    {metric:<18} by window: {cells}   last/first {ratio:.2f}")
    reference = sessions[next(iter(policies))]
    for name in list(policies)[1:]:
        until, drift = [], []
        for ref, got in zip(reference, sessions[name], strict=True):
            pairs = list(zip(ref.decisions, got.decisions, strict=False))
            speak = [((a[1] < DEFAULT_THRESHOLD), (b[1] < DEFAULT_THRESHOLD)) for a, b in pairs]
            same = next((i for i, (a, b) in enumerate(speak) if a != b), len(pairs))
            until.append(pairs[same][0][0] if same < len(pairs) else ref.decisions[-1][0])
            drift += [abs(a[1] - b[1]) for a, b in pairs[:same]]
        print(f"  {name}: decides as the context until t = {statistics.mean(until):.1f} s on average (the first "
              f"eviction is at ~{window_seconds:.0f} s); mean |dP(interval)| before that {np.mean(drift):.4f}")  # fmt: skip


def defaults(args) -> None:
    """Long videos with no options, as `narrate` runs them (the session's default budget: the trained length)."""
    from modeling_videollm_mod import StreamEvent
    from videollm_mod.loading import load_model_and_processor
    from videollm_mod.narrate import render_demo_videos
    from videollm_mod.recipes.counterfactuals import render_black

    model, processor = load_model_and_processor(args.model, device=args.device)
    print(f"{args.model or 'the demo model'}: default budget {model.stream_session(processor).describe_budget()}")
    with tempfile.TemporaryDirectory() as folder:
        black = render_black(os.path.join(folder, "black.mp4"), args.black_seconds)
        said = [e for e in model.stream_generate(black, processor) if e.role == "assistant"]
        print(f"  black video of {args.black_seconds:.0f} s: {len(said)} replies (target <= 1)")
        window = 120.0
        paths = render_demo_videos(folder, seed=4343, count=args.streams, seconds=3 * window)
        ground_truth = json.load(open(os.path.join(folder, "synthetic", "synthetic_events.json")))
        rows = []
        for path in paths:
            replies = [StreamEvent(*e) for e in model.stream_generate(path, processor) if e.role == "assistant"]
            events = ground_truth[os.path.basename(path)[:-4]]
            rows.append([window_scores(replies, events, w * window, (w + 1) * window) for w in range(3)])
    print(f"  {args.streams} clips of {3 * window:.0f} s, by 2-minute window (first, middle, last):")
    for metric in ("replies_per_event", "content_accuracy", "time_diff"):
        per_window = [statistics.mean(row[w][metric] for row in rows) for w in range(3)]
        print(f"    {metric:<18} " + " ".join(f"{v:5.2f}" for v in per_window))
    first, last = (statistics.mean(row[w]["content_accuracy"] for row in rows) for w in (0, 2))
    per_event = max(statistics.mean(row[w]["replies_per_event"] for row in rows) for w in range(3))
    print(
        f"  content accuracy last / first {last / first if first else float('nan'):.2f} (target >= 0.90); "
        f"replies per event, worst window {per_event:.2f} (target <= 1.5)"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["memory", "frames", "quality", "defaults", "memory-child"])
    parser.add_argument("--window", type=int, default=1024, help="memory: the budget in tokens")
    parser.add_argument("--factor", type=int, default=20, help="memory: the long stream, in windows")
    parser.add_argument("--baseline", type=int, default=1, help="memory: the stream it is compared with, in windows")
    parser.add_argument("--frames", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--megabytes", type=float, default=8.0, help="frames: the byte budget in MiB")
    parser.add_argument("--model", default=None, help="quality: model folder or Hub repo (default: the demo)")
    parser.add_argument("--budget", type=int, default=512, help="quality: the budget in tokens")
    parser.add_argument("--windows", type=int, default=10, help="quality: stream length in budgets")
    parser.add_argument("--streams", type=int, default=2, help="quality: held-out streams")
    parser.add_argument("--black-seconds", type=float, default=300.0, help="defaults: the black video's length")
    parser.add_argument("--device", default="cpu")
    args = parse_with_threads(parser, argv)
    if args.what == "memory-child":
        return memory_child(args.frames, args.window, args.device)
    {"memory": memory, "frames": frames_held, "quality": quality, "defaults": defaults}[args.what](args)


if __name__ == "__main__":
    main()
