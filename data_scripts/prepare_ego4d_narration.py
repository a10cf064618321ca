"""Ego4D narration streams (raw and refined) -> parquet DatasetDict + dataset card.

Reads the original annotation files (VideoLLM-online `data/ego4d/narration.py`):

- raw: `all_narrations_redacted.json` -> `["videos"][video_uid]["narrations"] = [{time, text, _annotation_uid}]`,
  split by the Ego4D benchmark files `{benchmark}_{val,test_unannotated}.json` (val/test videos; train = the rest);
- refined: `refined_narration_stream_{split}.json` -> `{video_uid: {annotation_uid: [{time, text}]}}`.

Raw texts are cleaned (tags `#C #c @c #O #o #Unsure #unsure #` removed, `.,\\n ` trimmed, `.` appended, first word
capitalised, at least two words), sorted by time and grouped by narration pass (`_annotation_uid`); refined passes
are used in file order, as the original does (a pass whose times go backwards is an error naming it). Each pass is
one stream with times snapped to `ceil(t * fps) / fps`, cut before the turn that would take it past
`--max-num-frames` frames (the original's `max_frames_clip`). Configs `raw` and `refined`, splits `train` and `val`.

Usage:

    videollm-mod data prepare_ego4d_narration \
        --annotation-dir datasets/ego4d/v2/annotations --video-root datasets/ego4d/v2/full_scale \
        --output-dir data/ego4d_narration --variants raw refined --fps 2 [--push-to-hub user/ego4d-narration-stream]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys

from ._hub import SkipCounter, build_card, columns_doc, finish
from ._sources import VideoSource, parse_prepare_args, prepare_parser
from ._stream import MAX_NUM_FRAMES, AnnotationError, ceil_frame, load_json, message, require, stream, stream_row

logger = logging.getLogger(__name__)

RAW_INSTRUCTION = (
    "Please concisely narrate the video in real time. Use the tag 'C' to denote the camera wearer, and other letter "
    "tags, such as 'X', to denote other individuals in the scene."
)
REFINED_INSTRUCTIONS = (
    "Please concisely narrate the video in real time.",
    "Help me to illustrate my view in short.",
    "Please simply describe what do you see.",
    "Continuously answer what you observed with simple text.",
    "Do concise real-time narration.",
    "Hey assistant, do you know the current video content? Reply me concisely.",
    "Simply interpret the scene for me.",
    "What can you tell me about? Be concise.",
    "Use simple text to explain what is shown in front of me.",
    "What is the action now? Please response in short.",
)
BENCHMARK_KEYS = {
    "goalstep": "videos",
    "fho_lta": "clips",
    "nlq": "videos",
    "moments": "videos",
    "av": "videos",
    "fho_oscc-pnr": "clips",
    "fho_sta": "annotations",
    "vq": "videos",
}
SPLITS = ("train", "val")
MIN_NARRATION_WORDS = 2  # VideoLLM-online keeps cleaned narrations of at least two words ("C verb.")
_TAGS = ("#C", "#c", "@c", "#O", "#o", "#Unsure", "#unsure", "#")


def clean_narration(text: str) -> str:
    """VideoLLM-online cleaning: drop tags, trim ``.,\\n `` at both ends, add ``.``, capitalise, collapse spaces."""
    for tag in _TAGS:
        text = text.replace(tag, "")
    words = (text.strip(".,\n ") + ".").split()
    words[0] = words[0].capitalize()
    return " ".join(words)


def split_video_uids(annotation_dir: str, all_uids: set[str], benchmarks: list[str]) -> dict[str, set[str]]:
    """train/val/test video ids: val/test are the videos of the benchmarks' val / test_unannotated files."""
    listed = {"val": set(), "test": set()}
    for benchmark in benchmarks:
        key = BENCHMARK_KEYS[benchmark]
        for split, suffix in (("val", "val"), ("test", "test_unannotated")):
            path = os.path.join(annotation_dir, f"{benchmark}_{suffix}.json")
            records = require(load_json(path), key, list, path)
            for i, record in enumerate(records):
                listed[split].add(require(record, "video_uid", str, path, prefix=f"{key}[{i}]."))
    val = listed["val"] & all_uids
    test = (listed["test"] - listed["val"]) & all_uids
    return {"train": all_uids - val - test, "val": val, "test": test}


def raw_narration_streams(path: str, video_uids: set[str]) -> dict[str, dict[str, list[dict]]]:
    """``{video_uid: {annotation_uid: [{time, text}]}}`` of cleaned narrations, sorted by time, for ``video_uids``."""
    videos = require(load_json(path), "videos", dict, path)
    streams = {}
    for video_uid in sorted(video_uids):
        narrations = require(require(videos, video_uid, dict, path), "narrations", list, path, video_uid)
        cleaned = []
        for i, narration in enumerate(narrations):
            fields = {
                name: require(narration, name, kind, path, video_uid, prefix=f"narrations[{i}].")
                for name, kind in (("time", float), ("text", str), ("_annotation_uid", str))
            }
            text = clean_narration(fields["text"])
            if len(text.split(" ")) >= MIN_NARRATION_WORDS:
                cleaned.append(fields | {"text": text})
        cleaned.sort(key=lambda n: n["time"])  # stable: equal times keep file order
        passes: dict[str, list[dict]] = {}
        for n in cleaned:
            passes.setdefault(n["_annotation_uid"], []).append({"time": n["time"], "text": n["text"]})
        streams[video_uid] = passes
    return streams


def refined_narration_streams(path: str) -> dict[str, dict[str, list[dict]]]:
    """Read ``refined_narration_stream_{split}.json`` and check its records; passes keep their file order."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(path, f"expected an object keyed by video_uid, got {type(data).__name__}")
    for video_uid, passes in data.items():
        if not isinstance(passes, dict):
            raise AnnotationError(path, "expected {annotation_uid: [narrations]}", video_uid)
        for annotation_uid, narrations in passes.items():
            if not isinstance(narrations, list):
                raise AnnotationError(path, "expected a list of narrations", video_uid, annotation_uid)
            previous = -float("inf")
            for i, narration in enumerate(narrations):
                for name, kind in (("time", float), ("text", str)):
                    require(narration, name, kind, path, video_uid, prefix=f"{annotation_uid}[{i}].")
                if narration["time"] < previous:
                    raise AnnotationError(
                        path, f"time {narration['time']} is before the previous narration's ({previous})", video_uid,
                        f"{annotation_uid}[{i}].time",
                    )  # fmt: skip
                previous = narration["time"]
    return data


def narration_conversation(narrations: list[dict], fps: float, total_frames: int, instruction: str):
    """One narration pass -> ``(conversation, start_frame, stop_frame)`` or ``None`` if it yields nothing.

    Each narration snaps to frame ``ceil(t * fps)`` (clipped to the video); consecutive duplicate texts are skipped;
    a narration on the same frame as the previous one replaces its text. The first stream is the single frame of the
    first narration, unlearned, followed by the user instruction (as `__getitem__` of the original does).
    """
    if not narrations:
        return None
    max_frame = total_frames - 1
    start = ceil_frame(narrations[0]["time"], fps, 0, max_frame)
    last, last_text, conversation = start - 1, None, []
    for narration in narrations:
        if last >= max_frame:
            break
        text = narration["text"]
        if text == last_text:
            continue
        frame = ceil_frame(narration["time"], fps, 0, max_frame)
        if frame == last:  # sorted and ceiled: the later narration is closer to this frame
            conversation[-1]["content"] = text
        else:
            conversation += [stream(frame - last, frame, fps), message("assistant", text, frame / fps, learn=1)]
        last, last_text = frame, text
    if not conversation:
        return None
    conversation[0]["learn"] = 0
    conversation.insert(1, message("user", instruction, start / fps))
    return conversation, start, last + 1


def build_rows(
    streams: dict,
    source: VideoSource,
    fps: float,
    instructions: tuple[str, ...],
    seed: int,
    max_num_frames: int = MAX_NUM_FRAMES,
) -> list[dict]:
    """Rows of the dataset (one per narration pass) for videos that have frames."""
    rows = []
    for video_uid, passes in streams.items():
        total = source.num_frames(video_uid)
        if total is None:
            continue
        for annotation_uid, narrations in passes.items():
            instruction = random.Random(f"{seed}-{video_uid}-{annotation_uid}").choice(instructions)
            built = narration_conversation(narrations, fps, total, instruction)
            if built is None:
                continue
            conversation, start, _ = built
            row = stream_row(video_uid, source.relative_path(video_uid), fps, total, conversation, start,
                             max_num_frames, annotation_uid=annotation_uid)  # fmt: skip
            if row is not None:
                rows.append(row)
    return rows


CARD_BODY = """\
# Ego4D narration streams (VideoLLM-online format)

Streams of Ego4D narrations for real-time video narration, built by `videollm-mod data prepare_ego4d_narration`
with the cleaning and timestamp rules of VideoLLM-online (`data/ego4d/narration.py`) at {fps} fps.

- `raw`: narrations from `all_narrations_redacted.json`; instruction: "{raw_instruction}"
- `refined`: the Llama-3-refined narrations (`refined_narration_stream_{{split}}.json`); instruction drawn (seeded) from
  10 short variants.

One row per narration pass (`annotation_uid`). Conversation: `stream` (1 frame, unlearned), `user` instruction, then
alternating `assistant` narration and `stream` messages; narration times snapped with `ceil(t * fps) / fps`. Raw
passes are sorted by time, refined passes keep their file order; a stream is cut before the turn that would take it
past {max_num_frames} frames (the original's `max_frames_clip`).

## Columns

{columns}
## Splits

val = videos of the Ego4D benchmark val files ({benchmarks}), test (not written) = their test_unannotated videos,
train = all other narrated videos. Rows: {counts}.

Videos are not included (Ego4D licence); point the processor at your `full_scale` folder or pre-computed features.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = prepare_parser("prepare_ego4d_narration", __doc__)
    parser.add_argument("--annotation-dir", required=True, help="Ego4D v2 annotations folder")
    parser.add_argument(
        "--variants", nargs="+", default=["raw"], choices=["raw", "refined"], help="configs to write (default: raw)"
    )
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARK_KEYS), choices=list(BENCHMARK_KEYS),
                        help="benchmark files defining the val/test videos (raw variant; default: all)")  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the refined instruction choice (default: %(default)s)"
    )
    return parse_prepare_args(parser, argv)


def prepare(args: argparse.Namespace) -> tuple[str, SkipCounter]:
    """Build, write (and push) the dataset; returns its folder and the skipped videos."""
    from datasets import DatasetDict, Value

    from ._hub import conversation_features, rows_to_dataset

    source, skips = args.source, args.source.skips
    features = conversation_features({"annotation_uid": Value("string")})
    configs, counts = {}, []
    for variant in args.variants:
        splits = {}
        if variant == "raw":
            path = os.path.join(args.annotation_dir, "all_narrations_redacted.json")
            videos = require(load_json(path), "videos", dict, path)
            uids = split_video_uids(args.annotation_dir, set(videos), args.benchmarks)
            for split in SPLITS:
                streams = raw_narration_streams(path, uids[split])
                splits[split] = build_rows(streams, source, args.fps, (RAW_INSTRUCTION,), args.seed,
                                           args.max_num_frames)  # fmt: skip
        else:
            for split in SPLITS:
                streams = refined_narration_streams(
                    os.path.join(args.annotation_dir, f"refined_narration_stream_{split}.json")
                )
                splits[split] = build_rows(streams, source, args.fps, REFINED_INSTRUCTIONS, args.seed,
                                           args.max_num_frames)  # fmt: skip
        # an empty split cannot be loaded back from parquet: leave it out (the card lists what is there)
        configs[variant] = DatasetDict({s: rows_to_dataset(rows, features) for s, rows in splits.items() if rows})
        counts += [f"{variant}/{s} {len(rows)}" for s, rows in splits.items()]
    card = build_card(
        "Ego4D narration streams",
        {name: list(d) for name, d in configs.items()},
        CARD_BODY.format(
            fps=args.fps,
            max_num_frames=args.max_num_frames,
            raw_instruction=RAW_INSTRUCTION,
            columns=columns_doc("| `annotation_uid` | string | Ego4D narration pass |\n"),
            benchmarks=", ".join(args.benchmarks),
            counts=", ".join(counts),
        ),
    )
    return finish(args, configs, card, counts, skips), skips


def main(argv: list[str] | None = None) -> int:
    prepare(parse_args(argv))
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod data prepare_ego4d_narration", main, sys.argv[1:]))
