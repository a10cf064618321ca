"""Ego4D GoalStep live-chat dialogues -> parquet DatasetDict + dataset card.

Reads `goalstep_livechat_trainval_filtered_21k.json`, a list of `{video_uid, conversation: [{role, content, time}]}`,
and builds streams as VideoLLM-online does (`data/ego4d/livechat.py`): the first message must be a user message
with `0 < time <= duration`; 0-20 random "waiting" frames go before it (all but the last learned); user times snap to
`floor(t * fps) / fps`, assistant times to `ceil(t * fps) / fps`; an assistant reply at the same time as a user
message follows it directly; streams between messages are learned; a stream is cut before the turn that would take it past `--max-num-frames`
frames (the original's `max_frames_clip`).

Usage:

    videollm-mod data prepare_ego4d_goalstep_livechat \
        --annotation-file datasets/ego4d/v2/annotations/goalstep_livechat_trainval_filtered_21k.json \
        --video-root datasets/ego4d/v2/full_scale --output-dir data/ego4d_goalstep_livechat --fps 2 \
        [--push-to-hub user/ego4d-goalstep-livechat]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys

from ._hub import SkipCounter, build_card, columns_doc, finish
from ._sources import VideoSource, parse_prepare_args, prepare_parser
from ._stream import (
    MAX_NUM_FRAMES,
    AnnotationError,
    ceil_frame,
    floor_frame,
    load_json,
    message,
    require,
    stream,
    stream_row,
)

logger = logging.getLogger(__name__)

MAX_WAITING_FRAMES = 20


def read_livechat(path: str) -> list[dict]:
    """Load and check the live-chat file; a malformed record raises ``AnnotationError`` naming video and field."""
    records = load_json(path)
    if not isinstance(records, list):
        raise AnnotationError(path, f"expected a list of {{video_uid, conversation}}, got {type(records).__name__}")
    for i, record in enumerate(records):
        video_uid = require(record, "video_uid", str, path, prefix=f"[{i}].")
        conversation = require(record, "conversation", list, path, video_uid)
        for j, m in enumerate(conversation):
            role = require(m, "role", str, path, video_uid, prefix=f"conversation[{j}].")
            if role not in ("user", "assistant"):
                raise AnnotationError(path, f"expected 'user' or 'assistant', got {role!r}", video_uid,
                                      f"conversation[{j}].role")  # fmt: skip
            require(m, "content", str, path, video_uid, prefix=f"conversation[{j}].")
            require(m, "time", float, path, video_uid, prefix=f"conversation[{j}].")
    return records


def livechat_conversation(messages: list[dict], fps: float, total_frames: int, rng: random.Random):
    """One dialogue -> ``(conversation, start_frame, stop_frame)``, or ``None`` if its first message is not usable.

    Follows the original rules, on integer frames: a message later than the video, earlier than the previous one,
    or a user message at the previous message's exact time ends the dialogue; an assistant message at the previous
    message's exact time follows a user message on its frame or replaces the previous reply; an assistant message
    that snaps onto the previous message's frame (but not its exact time) is dropped.
    """
    max_frame = total_frames - 1
    duration = max_frame / fps
    if not messages:
        return None
    first = messages[0]
    if not (first["role"] == "user" and 0 < first["time"] <= duration and first["content"]):
        return None
    frame = floor_frame(first["time"], fps, 0, max_frame)
    waiting = rng.randint(0, min(MAX_WAITING_FRAMES, frame))
    conversation = [stream(waiting, frame, fps, learn=waiting - 1)] if waiting else []
    conversation.append(message("user", first["content"], frame / fps))
    start = frame - waiting + 1
    last_time, last_frame, last_role = first["time"], frame, "user"  # the last *text* message
    for m in messages[1:]:
        role, content, time = m["role"], m["content"], m["time"]
        if time > duration or time < last_time:
            break
        if time == last_time:
            if role == "user":
                break
            if last_role == "user":
                conversation.append(message("assistant", content, last_frame / fps, learn=1))
                last_role = "assistant"
            else:
                conversation[-1]["content"] = content
            continue
        if role == "user":
            frame = floor_frame(time, fps, last_frame, max_frame)
            if frame > last_frame:
                conversation.append(stream(frame - last_frame, frame, fps))
            conversation.append(message("user", content, frame / fps))
        else:
            frame = ceil_frame(time, fps, last_frame, max_frame)
            if frame == last_frame:
                continue
            conversation += [
                stream(frame - last_frame, frame, fps),
                message("assistant", content, frame / fps, learn=1),
            ]
        last_time, last_frame, last_role = time, frame, role
    return conversation, start, last_frame + 1


def build_rows(
    records: list[dict], source: VideoSource, fps: float, seed: int, max_num_frames: int = MAX_NUM_FRAMES
) -> tuple[list[dict], int]:
    """Rows for dialogues whose video has frames; also returns how many dialogues the rules filtered out."""
    rows, filtered = [], 0
    for i, record in enumerate(records):
        video_uid = record["video_uid"]
        total = source.num_frames(video_uid)
        if total is None:
            continue
        built = livechat_conversation(record["conversation"], fps, total, random.Random(f"{seed}-{i}-{video_uid}"))
        row = None
        if built is not None:  # None: the first message is not usable
            conversation, start, _ = built
            row = stream_row(video_uid, source.relative_path(video_uid), fps, total, conversation, start,
                             max_num_frames)  # fmt: skip
        if row is None:  # no frame, or nothing learned
            filtered += 1
        else:
            rows.append(row)
    return rows, filtered


CARD_BODY = """\
# Ego4D GoalStep live-chat streams (VideoLLM-online format)

Generated user/assistant dialogues over Ego4D GoalStep videos, as streams at {fps} fps, built by
`videollm-mod data prepare_ego4d_goalstep_livechat` with the rules of VideoLLM-online
(`data/ego4d/livechat.py`): random 0-{max_waiting} waiting frames before the first user message (seeded), user times
snapped with `floor(t * fps) / fps`, assistant times with `ceil(t * fps) / fps`, streams cut before the turn that would
take them past {max_num_frames} frames.

## Columns

{columns}
## Splits

`train` (the original `trainval` file; the original has no held-out split): {count} rows; {filtered} dialogues
dropped by the rules (first message not a user message within the video, no frame, or nothing learned).
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = prepare_parser("prepare_ego4d_goalstep_livechat", __doc__)
    parser.add_argument("--annotation-file", required=True, help="goalstep_livechat_trainval_filtered_21k.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the waiting frames (default: %(default)s)")
    return parse_prepare_args(parser, argv)


def prepare(args: argparse.Namespace) -> tuple[str, SkipCounter]:
    """Build, write (and push) the dataset; returns its folder and the skipped videos."""
    from datasets import DatasetDict

    from ._hub import conversation_features, rows_to_dataset

    records = read_livechat(args.annotation_file)
    rows, filtered = build_rows(records, args.source, args.fps, args.seed, args.max_num_frames)
    configs = {"default": DatasetDict({"train": rows_to_dataset(rows, conversation_features())})}
    body = CARD_BODY.format(fps=args.fps, max_waiting=MAX_WAITING_FRAMES, max_num_frames=args.max_num_frames,
                            columns=columns_doc(), count=len(rows), filtered=filtered)  # fmt: skip
    card = build_card("Ego4D GoalStep live-chat streams", {"default": ["train"]}, body)
    counts = [f"train {len(rows)} rows", f"{filtered} dialogues filtered"]
    return finish(args, configs, card, counts, args.source.skips), args.source.skips


def main(argv: list[str] | None = None) -> int:
    prepare(parse_args(argv))
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod data prepare_ego4d_goalstep_livechat", main, sys.argv[1:]))
