"""`videollm-mod narrate VIDEO`: stream a video file through a model and print what it says, with timestamps.

    videollm-mod narrate cooking.mp4 --model path/or/repo --fps 2 --threshold 0.725 \\
        --query "Please narrate the video in real time." --query-time 0 --json conversation.json
    videollm-mod narrate --demo      # a freshly rendered synthetic video (not seen in training), the demo model

Lines are printed as they happen (`[  12.50s] Assistant: ...`) above a progress bar over the frames; `--json` writes
the conversation as a list of `{"time", "role", "text"}`. Not part of the remote code.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

# The demo checkpoint that ships with the package (built by the training recipe); absent until it is bundled.
DEMO_MODEL = Path(__file__).parent / "demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="videollm-mod narrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", help="video file (decoded with PyAV)")
    parser.add_argument(
        "--demo", action="store_true", help="render a held-out synthetic video (data_scripts.synthetic) and narrate it"
    )
    parser.add_argument("--seed", type=int, default=2024, help="with --demo: the synthetic video's seed")
    parser.add_argument(
        "--model", default=None, help=f"checkpoint folder or Hub repo (default: the bundled demo model, {DEMO_MODEL})"
    )
    parser.add_argument("--fps", type=float, default=None, help="frames per second fed to the model (default: 2)")
    parser.add_argument(
        "--threshold", type=float, default=0.725, help="speak when P(frame interval) < this, in [0, 1]"
    )
    parser.add_argument("--query", action="append", default=[], help="a user query (repeatable)")
    parser.add_argument(
        "--query-time", type=float, action="append", default=[], help="video time (s) of each --query (default 0)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128, help="longest reply in tokens")
    parser.add_argument("--chunk-size", type=int, default=8, help="frames per forward while the model stays silent")
    parser.add_argument("--json", dest="json_out", default=None, help="write the conversation to this JSON file")
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
    if args.max_new_tokens < 1 or args.chunk_size < 1:
        parser.error("--max-new-tokens and --chunk-size must be >= 1")
    return args


def resolve_model(model: str | None) -> str:
    if model is not None:
        return model
    if not (DEMO_MODEL / "config.json").is_file():
        raise SystemExit(
            f"videollm-mod narrate: the demo checkpoint is not bundled with this installation yet (expected at "
            f"{DEMO_MODEL}); pass --model PATH_OR_REPO"
        )
    return str(DEMO_MODEL)


def render_demo_video(folder: str, seed: int) -> str:
    """One synthetic video like the demo model's training data (32 px, 20 s, a shape event every ~2.5 s), from a
    seed the training set did not use; returns its path."""
    from data_scripts import synthetic

    paths = synthetic.generate_dataset(
        os.path.join(folder, "synthetic"), num_videos=1, seconds=20, fps=4.0, resolution=32, seed=seed,
        num_coin_videos=0, difficulty=1, event_interval=2.5, val_fraction=0.0, test_fraction=0.0,
    )  # fmt: skip
    return str(next(Path(paths["ego4d_videos"]).glob("*.mp4")))


def write_json_atomically(path: str, conversation: list[dict]) -> None:
    """Write to a temporary name and rename, so that an interrupted run never leaves a half-written file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    Path(tmp).write_text(json.dumps(conversation, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.demo:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            args.video = render_demo_video(folder, args.seed)
            print(f"demo: narrating a synthetic video rendered with seed {args.seed} ({os.path.basename(args.video)})")
            return narrate(args)
    return narrate(args)


def narrate(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoProcessor

    from .processing_videollm_mod import VideoDecodingError, iter_video_frames, video_num_frames

    model_path = resolve_model(args.model)
    try:
        total = video_num_frames(args.video, args.fps or 2.0)  # checks the file before the model loads
    except VideoDecodingError as e:
        print(f"videollm-mod narrate: {e}", file=sys.stderr)
        return 1
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=True, dtype="auto").to(device).eval()
    fps = args.fps or processor.image_processor.fps
    if args.fps is None:
        total = video_num_frames(args.video, fps)
    times = args.query_time + [0.0] * (len(args.query) - len(args.query_time))
    queries = list(zip(times, args.query, strict=True))

    bar = tqdm(total=total, unit="frame", desc=os.path.basename(args.video), disable=args.no_progress)

    def frames():
        for time, frame in iter_video_frames(args.video, fps):
            yield time, frame
            bar.update(1)

    conversation = []
    try:
        for event in model.stream_generate(
            frames(),
            processor,
            fps=fps,
            queries=queries,
            threshold=args.threshold,
            max_new_tokens=args.max_new_tokens,
            chunk_size=args.chunk_size,
        ):
            conversation.append(event._asdict())
            bar.write(f"[{event.time:8.2f}s] {event.role.capitalize()}: {event.text}")
    except VideoDecodingError as e:
        bar.close()
        print(f"videollm-mod narrate: {e}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        if args.json_out is not None:
            write_json_atomically(args.json_out, conversation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
