"""Stream a video file through a model and print what it says, with timestamps (`videollm-mod narrate`).

    videollm-mod narrate cooking.mp4 --model path/or/repo --fps 2 --threshold 0.725 \\
        --query "Please narrate the video in real time." --query-time 0 --json conversation.json --plot timeline.png
    videollm-mod narrate --demo      # a freshly rendered synthetic video (not seen in training), the demo model

Lines are printed as they happen (`[  12.50s] Assistant: ...`) above a progress bar over the frames, then a summary
line; `--json` writes the conversation as a list of `{"time", "role", "text"}` (to a temporary name, renamed when
complete).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from modeling_videollm_mod import DEFAULT_THRESHOLD

from . import DEMO_MODEL
from .errors import UserError

PROG = "videollm-mod narrate"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", help="video file (any format PyAV opens)")
    parser.add_argument("--demo", action="store_true", help="render a held-out synthetic video and narrate it")
    parser.add_argument("--seed", type=int, default=2024, help="with --demo: the synthetic video's seed")
    parser.add_argument("--model", default=None, help=f"model folder or Hub repo (default: the demo, {DEMO_MODEL})")
    parser.add_argument("--fps", type=float, default=None, help="frames per second fed to the model (default: 2)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="speak after a frame when P(frame interval) < THRESHOLD or the interval is not the most probable token "
        "(VideoLLM-online's rule; 0 = argmax), in [0, 1]",
    )
    parser.add_argument("--query", action="append", default=[], help="a user query (repeatable)")
    parser.add_argument(
        "--query-time", type=float, action="append", default=[], help="video time (s) of each --query (default 0)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128, help="longest reply in tokens")
    parser.add_argument("--chunk-size", type=int, default=8, help="frames per forward while the model stays silent")
    parser.add_argument("--json", dest="json_out", default=None, help="write the conversation to this JSON file")
    parser.add_argument(
        "--plot", default=None, help="draw the stream's timeline (P(stay silent) per frame, threshold, replies) here"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if (args.video is None) == (not args.demo):
        parser.error("give a VIDEO file or --demo (not both)")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold {args.threshold} must lie in [0, 1]")
    if args.fps is not None and not (args.fps > 0 and math.isfinite(args.fps)):
        parser.error(f"--fps {args.fps} must be a positive number")
    if len(args.query_time) > len(args.query):
        parser.error(f"{len(args.query_time)} --query-time values for {len(args.query)} --query")
    if any(not (math.isfinite(t) and t >= 0) for t in args.query_time):
        parser.error(f"--query-time {args.query_time}: times must be >= 0 seconds")
    if args.max_new_tokens < 1 or args.chunk_size < 1:
        parser.error("--max-new-tokens and --chunk-size must be >= 1")
    if args.json_out is not None:
        folder = os.path.dirname(os.path.abspath(args.json_out))
        if not os.path.isdir(folder):
            parser.error(f"--json {args.json_out}: the folder {folder} does not exist")
    return args


def render_demo_video(folder: str, seed: int) -> str:
    """One synthetic video like the demo model's training data (`recipes.train_demo`: 48 px, events every 2.5 s on
    average at irregular times), from a seed its training and validation sets did not use (they use 0 and 1)."""
    from .data_scripts import synthetic

    paths = synthetic.generate_dataset(
        os.path.join(folder, "synthetic"), num_videos=1, seconds=20, fps=4.0, resolution=48, seed=seed,
        num_coin_videos=0, difficulty=1, event_interval=2.5, val_fraction=1.0, test_fraction=0.0,
    )  # fmt: skip
    return str(next(Path(paths["ego4d_videos"]).glob("*.mp4")))


def write_json_atomically(path: str, conversation: list[dict]) -> None:
    """Write to a temporary name and rename, so that an interrupted run never leaves a half-written file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    Path(tmp).write_text(json.dumps(conversation, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.demo:
        return narrate(args)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        args.video = render_demo_video(folder, args.seed)
        print(f"demo: narrating a synthetic video rendered with seed {args.seed} ({os.path.basename(args.video)})")
        return narrate(args)


def narrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from modeling_videollm_mod import iter_video_frames, video_num_frames

    from .loading import load_model_and_processor
    from .timeline import check_plot_path, save_timeline

    total = video_num_frames(args.video, args.fps or 2.0)  # checks the file before the model loads
    if args.plot is not None:
        check_plot_path(args.plot)
    model, processor = load_model_and_processor(args.model, device=args.device)
    fps = args.fps or processor.image_processor.fps
    total = video_num_frames(args.video, fps)
    times = args.query_time + [0.0] * (len(args.query) - len(args.query_time))
    last_time = (total - 1) / fps
    late = [t for t in times if t > last_time]
    if late:
        raise UserError(f"--query-time {late}: after the last frame of {args.video} (t={last_time:.2f}s)")
    queries = list(zip(times, args.query, strict=True))

    bar = tqdm(total=total, unit="frame", desc=os.path.basename(args.video), disable=args.no_progress)

    def frames():
        for time, frame in iter_video_frames(args.video, fps):
            yield time, frame
            bar.update(1)

    conversation = []
    session = model.stream_session(
        processor, threshold=args.threshold, max_new_tokens=args.max_new_tokens, chunk_size=args.chunk_size
    )
    try:
        events = model.stream_generate(frames(), processor, fps=fps, queries=queries, session=session)
        for event in events:
            conversation.append(event._asdict())
            bar.write(f"[{event.time:8.2f}s] {event.role.capitalize()}: {event.text}")
    finally:
        bar.close()
        if args.json_out is not None:
            write_json_atomically(args.json_out, conversation)
        if args.plot is not None:
            save_timeline(
                args.plot, session.decisions, session.threshold, session.events, title=os.path.basename(args.video)
            )
    replies = sum(e["role"] == "assistant" for e in conversation)
    print(
        f"{total} frames at {fps:g} fps ({last_time:.1f} s), {replies} replies"
        + (f"; conversation written to {args.json_out}" if args.json_out else "")
        + (f"; timeline drawn in {args.plot}" if args.plot else "")
    )
    return 0


if __name__ == "__main__":
    from .cli import run

    sys.exit(run(PROG, main, sys.argv[1:]))
