"""Stream videos or a live source through a model and print what it says, with timestamps (`videollm-mod narrate`).

    videollm-mod narrate cooking.mp4 --model path/or/repo --fps 2 --threshold 0.725 \\
        --query "Please narrate the video in real time." --query-time 0 --json conversation.json --plot timeline.png
    videollm-mod narrate a.mp4 b.mp4 c.mp4          # several videos at once: one batched session
    videollm-mod narrate /dev/video0                # a camera; also a URL (rtsp://..., http://...) or - (stdin):
    ffmpeg -i input -f mpegts - | videollm-mod narrate - --format mpegts
    videollm-mod narrate --demo      # a freshly rendered synthetic video (not seen in training), the demo model

Lines are printed as they happen (`[  12.50s] Assistant: ...`) above a progress bar over the frames, then a summary
line; `--json` writes the conversation as a list of `{"time", "role", "text"}` (with several videos: an object
mapping each video to its list), to a temporary name renamed when complete. Recorded videos run as fast as the model
goes, in chunks of frames it sizes by itself; a live source runs in real time until it ends (or Ctrl-C): frames the
model has no time for are dropped (it always takes the most recent one), and the summary reports how many and the
lag. The cache keeps the system prompt, the last replies and the most recent frames within `--cache-budget`, so a
stream of any length runs in bounded memory.

With `--demo` the video's true events are printed among the replies, in time order (`[    2.22s] Truth: C sees a red
triangle appear.`: the narration the demo was trained to say, at the time the event happens), and `--json` writes
`{"seed", "conversation", "ground_truth"}`, both lists of `{"time", ...}`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

from . import DEMO_MODEL
from .errors import UserError
from .files import write_text_atomically
from .loading import add_model_arguments
from .remote_code import remote_constant, remote_stdlib_module

PROG = "videollm-mod narrate"
# Read without importing the model's package (torch, transformers): --help and argument errors come at once.
DEFAULT_THRESHOLD = remote_constant("session_videollm_mod", "DEFAULT_THRESHOLD")
BYTE_UNITS = {"": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def cache_budget(text: str):
    """`--cache-budget`: a number of tokens (`4096`) or a size in bytes (`512MB`, `1.5GiB`)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in BYTE_UNITS) or (not unit and "." in match.group(1)):
        raise argparse.ArgumentTypeError(f"{text!r}: give tokens (4096) or a size (512MB, 1.5GiB)")
    value = float(match.group(1)) * BYTE_UNITS[unit or ""]
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    from modeling_videollm_mod import CacheBudget  # once the text is checked: the import takes seconds

    return CacheBudget(max_bytes=int(value)) if unit else CacheBudget(max_tokens=int(value))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "videos",
        nargs="*",
        metavar="VIDEO",
        help="video file(s) (any format PyAV opens; several run as one batch), or one live source: a camera device "
        "(/dev/video0), a URL (rtsp://, http://, udp://, ...) or - for a stream on standard input",
    )
    parser.add_argument("--demo", action="store_true", help="render a held-out synthetic video and narrate it")
    parser.add_argument(
        "--seed", type=int, default=2024, help="with --demo: the synthetic video's seed (default: %(default)s)"
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help=f"frames per second fed to the model (default: the model's own, from its processor; {demo_fps():g} for "
        "the demo)",
    )
    parser.add_argument(
        "--format",
        dest="input_format",
        default=None,
        help="FFmpeg input format of a live source where it cannot be probed (mpegts, nut, v4l2, avfoundation, ...)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="speak after a frame when P(frame interval) < THRESHOLD or the interval is not the most probable token "
        "(VideoLLM-online's rule; 0 = argmax), in [0, 1] (default: %(default)s, VideoLLM-online's demo)",
    )
    parser.add_argument("--query", action="append", default=[], help="a user query (repeatable)")
    parser.add_argument(
        "--query-time", type=float, action="append", default=[], help="video time (s) of each --query (default: 0)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="longest reply in tokens (default: %(default)s)"
    )
    parser.add_argument(
        "--chunk-size",
        default="auto",
        help="frames per forward of a recorded video: auto (default: sized by the model's recent replies) or N",
    )
    parser.add_argument(
        "--cache-budget",
        type=cache_budget,
        default=None,
        help="what the cache may hold per video: tokens (4096) or bytes (512MB, 1.5GiB) (default: the stream length "
        "the model was trained on, from its config; else its context)",
    )
    parser.add_argument("--json", dest="json_out", default=None, help="write the conversation to this JSON file")
    parser.add_argument(
        "--plot",
        default=None,
        help="draw the stream's timeline (P(stay silent) per frame, threshold, replies) here; with several videos, "
        "one figure each, numbered (timeline-1.png, ...)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if bool(args.videos) == args.demo:
        parser.error("give a VIDEO file or --demo (not both)")
    # The values are checked before the model's package is imported (seconds); an error is one line (cli.run).
    is_live_source = remote_stdlib_module("live_videollm_mod").is_live_source
    live = [v for v in args.videos if is_live_source(v)]
    if live and len(args.videos) > 1:
        raise UserError(f"{live[0]}: a live source streams alone; several videos at once must be files")
    args.live = bool(live)
    missing = [v for v in args.videos if not is_live_source(v) and not os.path.isfile(v)]
    if missing:
        raise UserError(f"{missing[0]}: video file not found")
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold} must lie in [0, 1]")
    if args.fps is not None and not (args.fps > 0 and math.isfinite(args.fps)):
        raise UserError(f"--fps {args.fps} must be a positive number")
    if len(args.query_time) > len(args.query):
        raise UserError(f"{len(args.query_time)} --query-time values for {len(args.query)} --query")
    negative = [t for t in args.query_time if not (math.isfinite(t) and t >= 0)]
    if negative:
        raise UserError(f"--query-time {negative[0]:g}: a time must be >= 0 seconds")
    if args.chunk_size != "auto":
        if not args.chunk_size.isdigit() or int(args.chunk_size) < 1:
            raise UserError(f"--chunk-size {args.chunk_size}: give auto or a number >= 1")
        args.chunk_size = int(args.chunk_size)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {args.max_new_tokens} must be >= 1")
    if args.json_out is not None:
        folder = os.path.dirname(os.path.abspath(args.json_out))
        if not os.path.isdir(folder):
            raise UserError(f"--json {args.json_out}: the folder {folder} does not exist")
    if args.plot is not None:
        from .timeline import check_plot_path

        check_plot_path(args.plot)
    return args


def demo_fps() -> float:
    """The frame rate the demo model runs at (its processor's `fps`), for the help."""
    return json.loads((DEMO_MODEL / "processor_config.json").read_text())["image_processor"]["fps"]


def render_demo_videos(folder: str, seed: int, count: int = 1, seconds: float = 20.0) -> list[str]:
    """`count` synthetic videos like the demo model's training data (`recipes.train_demo`: 48 px, events every 2.5 s
    on average at irregular times), from a seed its training and validation sets did not use (they use 100 and 101);
    their paths, and the generator's ground truth in `{folder}/synthetic/synthetic_events.json`."""
    from .data_scripts import synthetic

    paths = synthetic.generate_dataset(
        os.path.join(folder, "synthetic"), num_videos=count, seconds=seconds, fps=4.0, resolution=48, seed=seed,
        num_coin_videos=0, difficulty=1, event_interval=2.5, val_fraction=0.0, test_fraction=0.0,
    )  # fmt: skip
    return sorted(str(path) for path in Path(paths["ego4d_videos"]).glob("*.mp4"))


def demo_ground_truth(folder: str, video: str) -> list[dict]:
    """What truly happens in `video`, one of `render_demo_videos(folder, ...)`: its events as `{"time", "text"}` in
    time order, each the narration the demo model was trained to say (cleaned as its training data) at the time the
    event happens (the end of a move)."""
    from .data_scripts.prepare_ego4d_narration import clean_narration
    from .data_scripts.synthetic import Event, dataset_paths

    with open(dataset_paths(os.path.join(folder, "synthetic"))["events"], encoding="utf-8") as file:
        records = json.load(file)[Path(video).stem]
    events = sorted((Event.from_dict(record) for record in records), key=lambda event: event.narration_time)
    return [{"time": round(e.narration_time, 2), "text": clean_narration(e.narration)} for e in events]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.demo:
        return narrate(args)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        args.videos = render_demo_videos(folder, args.seed)
        print(
            f"demo: narrating a synthetic video rendered with seed {args.seed} ({os.path.basename(args.videos[0])}); "
            "its true events are the Truth lines"
        )
        return narrate(args, ground_truth=demo_ground_truth(folder, args.videos[0]))


def line(time: float, role: str, text: str) -> str:
    """A printed line of the conversation: `[  12.50s] Assistant: ...`."""
    return f"[{time:8.2f}s] {role.capitalize()}: {text}"


def narrate(args: argparse.Namespace, ground_truth: list[dict] | None = None) -> int:
    """Narrate `args.videos` as the command does; `ground_truth` (`{"time", "text"}` of one video's true events, in
    time order) is printed among the replies and written with them (`--demo`)."""
    from tqdm import tqdm

    from modeling_videollm_mod import PacedFrames, iter_video_frames, video_num_frames

    from .loading import load_model_and_processor

    if not args.live:
        for video in args.videos:  # checks the files before the model loads
            video_num_frames(video, args.fps or 2.0)
    model, processor = load_model_and_processor(args.model, args.device, args.trust_remote_code, args.allow_pickle)
    fps = args.fps or processor.image_processor.fps
    totals = None if args.live else [video_num_frames(video, fps) for video in args.videos]
    times = args.query_time + [0.0] * (len(args.query) - len(args.query_time))
    if totals is not None:
        last_time = (min(totals) - 1) / fps
        late = [t for t in times if t > last_time]
        if late:
            raise UserError(f"--query-time {late}: after the last frame of a video (t={last_time:.2f}s)")
    queries = list(zip(times, args.query, strict=True))

    names = [os.path.basename(video) if video != "-" else "stdin" for video in args.videos]
    bar = tqdm(total=totals and sum(totals), unit="frame", desc=", ".join(names), disable=args.no_progress)

    def counted(pairs):
        for pair in pairs:
            yield pair
            bar.update(1)

    decoded = [iter_video_frames(video, fps, input_format=args.input_format) for video in args.videos]
    paced = PacedFrames(decoded[0], fps) if args.live else None
    sources = [counted(paced)] if paced is not None else [counted(pairs) for pairs in decoded]
    session = model.batch_stream_session(
        processor,
        len(sources),
        threshold=args.threshold,
        max_new_tokens=args.max_new_tokens,
        chunk_size=1 if args.live else args.chunk_size,
        budget=args.cache_budget,
    )
    conversations = [[] for _ in args.videos]
    untold = list(ground_truth or [])  # true events not printed yet: each goes before the first line after it

    def write_truths(until: float) -> None:
        while untold and untold[0]["time"] <= until:
            truth = untold.pop(0)
            bar.write(line(truth["time"], "truth", truth["text"]))

    try:
        events = model.stream_generate_batch(
            sources, processor, fps=fps, queries=[queries] * len(sources), session=session
        )
        for index, event in events:
            conversations[index].append(event._asdict())
            write_truths(event.time)
            prefix = f"{names[index]} " if len(names) > 1 else ""
            bar.write(prefix + line(event.time, event.role, event.text))
        write_truths(math.inf)
    finally:
        bar.close()
        if args.json_out is not None:
            output = conversations[0] if len(args.videos) == 1 else dict(zip(args.videos, conversations, strict=True))
            if ground_truth is not None:
                output = {"seed": args.seed, "conversation": conversations[0], "ground_truth": ground_truth}
            write_text_atomically(args.json_out, json.dumps(output, indent=2, ensure_ascii=False) + "\n")
        if args.plot is not None:
            draw_timelines(args.plot, session, names)
    lines = [f"cache budget per video: {session.describe_budget()}"]
    for name, total, conversation in zip(names, totals or [None], conversations, strict=True):
        replies = sum(e["role"] == "assistant" for e in conversation)
        stream = paced.summary() if total is None else f"{total} frames at {fps:g} fps ({(total - 1) / fps:.1f} s)"
        truths = f", {len(ground_truth)} events in the video" if ground_truth is not None else ""
        lines.append(f"{name}: " * (len(names) > 1) + f"{stream}, {replies} replies{truths}")
    print(
        "\n".join(lines)
        + (f"; conversation written to {args.json_out}" if args.json_out else "")
        + (f"; timeline drawn in {args.plot}" if args.plot else "")
    )
    return 0


def draw_timelines(path: str, session, names: list[str]) -> None:
    """One timeline figure per stream of `session`: `path` itself for one stream, else `path` numbered per stream."""
    from .timeline import save_timeline

    stem, suffix = os.path.splitext(path)
    for index, (stream, name) in enumerate(zip(session.streams, names, strict=True), 1):
        target = path if len(names) == 1 else f"{stem}-{index}{suffix}"
        save_timeline(target, stream.decisions, session.threshold, stream.events, title=name)


if __name__ == "__main__":
    from .cli import run

    sys.exit(run(PROG, main, sys.argv[1:]))
