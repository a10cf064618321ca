"""COIN benchmarks (step, next, task, procedure, taskprocedure) -> parquet DatasetDict + dataset card.

Reads the official `COIN.json` (`{"database": {video_id: {class, subset, start, end, annotation: [{segment, label}]}}}`)
and builds the five VideoLLM-online benchmarks (`data/coin/benchmarks.py`), each `user -> stream -> assistant`:

- `step`: the stream is one step's segment, the answer that step;
- `next`: the stream is step i, the answer step i+1;
- `task`: the stream is the annotated span, the answer the task;
- `procedure`: the stream is step i, the answer the next (up to 5) steps as a numbered list;
- `taskprocedure`: as `procedure`, the question prefixed with "To {task}, ".

Times snap to `ceil(t * fps) / fps`; a segment covers frames `[ceil(s * fps), ceil(e * fps)]`; a sample whose
stream is longer than `--max-num-frames` frames is dropped (the original's `max_frames_clip` leaves it no frame).
Splits: `train` (subset "training") and `test` (subset "testing"). Videos without frames are skipped and counted.

Usage:

    videollm-mod data prepare_coin --coin-json datasets/coin/coin.json --video-root datasets/coin/videos \
        --output-dir data/coin --fps 2 [--push-to-hub user/coin-benchmarks]
"""

from __future__ import annotations

import argparse
import logging
import sys

from ._hub import SkipCounter, build_card, columns_doc, finish
from ._sources import VideoSource, parse_prepare_args, prepare_parser
from ._stream import MAX_NUM_FRAMES, AnnotationError, ceil_frame, load_json, message, require, stream, stream_row

logger = logging.getLogger(__name__)

BENCHMARKS = ("step", "next", "task", "procedure", "taskprocedure")
SPLITS = {"train": "train", "test": "test"}  # split -> substring of COIN's `subset` ("training" / "testing")
MAX_NUM_STEPS = 5
_SUFFIX = "Format your answer concisely. No extra text output."
_LIST_SUFFIX = (
    "Format your answer concisely, listing each action on a new line with a number prefix. No extra text output."
)
STEP_QUERY = f"What is the action in the video? {_SUFFIX}"
NEXT_QUERY = f"What is the next action for the video? {_SUFFIX}"
TASK_QUERY = f"What is the overall activity in the video? {_SUFFIX}"
# Two COIN step labels the original rewrites.
STEP_FIXES = {
    "process (crop, fold) paper": "crop and fold paper",
    "try to press gun head, spray residual old grease": "try to press gun head to spray residual old grease",
}
_TASK_FIXES = (
    (" t v", " TV"),
    (" c d", " CD"),
    ("s i m", "SIM"),
    ("n b a", "NBA"),
    ("s s d", "SSD"),
    ("r j45", "RJ45"),
)


def clean_task(name: str) -> str:
    """COIN class to words: ``PutOnHair`` -> ``put on hair``, keeping acronyms (``ChangeTVChannel`` -> ``change TV channel``)."""
    words = "".join(" " + c.lower() if c.isupper() else c for c in name)
    for old, new in _TASK_FIXES:
        words = words.replace(old, new)
    return words.strip()


def clean_step(label: str) -> str:
    return STEP_FIXES.get(label, label)


def procedure_query(num_steps: int, task: str | None = None) -> str:
    """The procedure question (``task`` given: taskprocedure); one remaining step falls back to the next-step one."""
    if num_steps == 1:
        query = NEXT_QUERY
    else:
        query = f"What is the next {num_steps} actions for the video? {_LIST_SUFFIX}"
    return query if task is None else f"To {task}, {query[0].lower()}{query[1:]}"


def answer(text: str, keep_case: bool = False) -> str:
    """An answer sentence: COIN's lower-case label capitalised as the original does (`str.capitalize`, which also
    lowercases the rest), or with `keep_case` a documented name as written (Ego-Exo4D keysteps), then a period."""
    return (text if keep_case else text.capitalize()) + "."


def read_coin(path: str) -> dict[str, dict]:
    """Load and check COIN.json; returns ``{video_id: {task, subset, start, end, steps: [{start, end, text}]}}``."""
    database = require(load_json(path), "database", dict, path)
    videos = {}
    for video_id, record in database.items():
        task = require(record, "class", str, path, video_id)
        subset = require(record, "subset", str, path, video_id)
        start, end = require(record, "start", float, path, video_id), require(record, "end", float, path, video_id)
        steps = []
        for i, step in enumerate(require(record, "annotation", list, path, video_id)):
            segment = require(step, "segment", list, path, video_id, prefix=f"annotation[{i}].")
            label = require(step, "label", str, path, video_id, prefix=f"annotation[{i}].")
            if len(segment) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in segment):
                raise AnnotationError(path, f"expected [start, end] seconds, got {segment!r}", video_id,
                                      f"annotation[{i}].segment")  # fmt: skip
            if segment[0] > segment[1]:
                raise AnnotationError(path, f"segment starts after it ends: {segment!r}", video_id,
                                      f"annotation[{i}].segment")  # fmt: skip
            steps.append({"start": segment[0], "end": segment[1], "text": clean_step(label)})
        videos[video_id] = {"task": clean_task(task), "subset": subset, "start": start, "end": end, "steps": steps}
    return videos


def _sample(query: str, first: int, last: int, response: str, fps: float) -> tuple[list[dict], int, int]:
    conversation = [
        message("user", query, first / fps),
        stream(last - first + 1, last, fps),
        message("assistant", response, last / fps, learn=1),
    ]
    return conversation, first, last + 1


def benchmark_samples(
    benchmark: str, video: dict, fps: float, total_frames: int, keep_case: bool = False
) -> list[dict]:
    """The samples of one video for ``benchmark``: ``{conversation, start_frame, stop_frame, label}``.

    ``label`` lists the lower-cased answers the COIN accuracy compares with (one per answered step); ``keep_case``
    answers with the step and task names as written (`answer`).
    """
    max_frame = total_frames - 1

    def frames(start: float, end: float) -> tuple[int, int]:
        return ceil_frame(start, fps, 0, max_frame), ceil_frame(end, fps, 0, max_frame)

    steps, task = video["steps"], video["task"]
    samples = []
    if benchmark == "task":
        first, last = frames(video["start"], video["end"])
        samples.append((_sample(TASK_QUERY, first, last, answer(task, keep_case), fps), [task.lower()]))
    elif benchmark == "step":
        for step in steps:
            first, last = frames(step["start"], step["end"])
            samples.append(
                (_sample(STEP_QUERY, first, last, answer(step["text"], keep_case), fps), [step["text"].lower()])
            )
    elif benchmark == "next":
        for step, nxt in zip(steps[:-1], steps[1:], strict=True):
            first, last = frames(step["start"], step["end"])
            samples.append(
                (_sample(NEXT_QUERY, first, last, answer(nxt["text"], keep_case), fps), [nxt["text"].lower()])
            )
    elif benchmark in ("procedure", "taskprocedure"):
        for i, step in enumerate(steps[:-1]):
            first, last = frames(step["start"], step["end"])
            following = steps[i + 1 : i + 1 + MAX_NUM_STEPS]
            query = procedure_query(len(following), task if benchmark == "taskprocedure" else None)
            if len(following) == 1:
                response = answer(following[0]["text"], keep_case)
            else:
                response = "\n".join(f"{k + 1}. {answer(s['text'], keep_case)}" for k, s in enumerate(following))
            samples.append((_sample(query, first, last, response, fps), [s["text"].lower() for s in following]))
    else:
        raise ValueError(f"unknown COIN benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    return [
        {"conversation": conv, "start_frame": start, "stop_frame": stop, "label": label}
        for (conv, start, stop), label in samples
    ]


def build_rows(
    videos: dict, benchmark: str, split: str, source: VideoSource, fps: float, max_num_frames: int = MAX_NUM_FRAMES
) -> list[dict]:
    rows = []
    for video_id, video in videos.items():
        if SPLITS[split] not in video["subset"].lower():
            continue
        total = source.num_frames(video_id)
        if total is None:
            continue
        for sample in benchmark_samples(benchmark, video, fps, total):
            row = stream_row(video_id, source.relative_path(video_id), fps, total, sample["conversation"],
                             sample["start_frame"], max_num_frames, task=video["task"], label=sample["label"])  # fmt: skip
            if row is not None:
                rows.append(row)
    return rows


CARD_BODY = """\
# COIN benchmarks (VideoLLM-online format)

The five COIN benchmarks of VideoLLM-online (`data/coin/benchmarks.py`) at {fps} fps, built by
`videollm-mod data prepare_coin`: `step`, `next`, `task`, `procedure`, `taskprocedure` (configs), each with
`train` and `test` splits. Each row is `user` question -> `stream` (the step's or task's frames) -> `assistant` answer.
Task names are COIN classes in words (`ChangeTVChannel` -> `change TV channel`); answers are capitalised with a final
period; procedure answers list the next (up to {max_steps}) steps as `1. X.\\n2. Y.`.

At evaluation drop the assistant turn and generate; the accuracy compares the generated text (lower-cased, trailing
period stripped, per line after the last `. ` for procedures) with `label`, exactly or by the Levenshtein-nearest
category.

## Columns

{columns}
## Rows

{counts}. {skips}.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = prepare_parser("prepare_coin", __doc__, "video_id")
    parser.add_argument("--coin-json", required=True, help="the official COIN.json")
    parser.add_argument(
        "--benchmarks", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS, help="configs to write (default: all)"
    )
    return parse_prepare_args(parser, argv)


def prepare(args: argparse.Namespace) -> tuple[str, SkipCounter]:
    """Build, write (and push) the dataset; returns its folder and the skipped videos."""
    from datasets import DatasetDict, List, Value

    from ._hub import conversation_features, rows_to_dataset

    skips = args.source.skips
    videos = read_coin(args.coin_json)
    features = conversation_features({"task": Value("string")})
    features["label"] = List(Value("string"))
    configs, counts = {}, []
    for benchmark in args.benchmarks:
        splits = {
            split: build_rows(videos, benchmark, split, args.source, args.fps, args.max_num_frames) for split in SPLITS
        }
        # an empty split cannot be loaded back from parquet: leave it out (the card lists what is there)
        configs[benchmark] = DatasetDict({s: rows_to_dataset(r, features) for s, r in splits.items() if r})
        counts += [f"{benchmark}/{s} {len(r)}" for s, r in splits.items()]
    extra = "| `task` | string | the video's task, in words |\n| `label` | list of string | lower-cased answer step(s) / task |\n"
    body = CARD_BODY.format(fps=args.fps, max_steps=MAX_NUM_STEPS, columns=columns_doc(extra), counts=", ".join(counts),
                            skips=skips.summary())  # fmt: skip
    card = build_card("COIN benchmarks", {b: list(d) for b, d in configs.items()}, body)
    return finish(args, configs, card, counts, skips), skips


def main(argv: list[str] | None = None) -> int:
    prepare(parse_args(argv))
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod data prepare_coin", main, sys.argv[1:]))
