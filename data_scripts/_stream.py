"""Stream conversations shared by the data scripts: timestamp snapping, message records, annotation checks.

A conversation is a list of messages with one fixed set of fields so that it stores as an Arrow list of structs:

- ``role``: ``"user"``, ``"assistant"`` or ``"stream"``.
- ``content``: the text (``""`` for streams).
- ``time``: seconds on the fps grid: when the message is said (text) or the time of the stream's last frame.
- ``learn``: text messages 0/1; streams the number of leading frames whose decision is learned
  (VideoLLM-online's ``True`` == all ``num_frames``, ``False`` == 0, an int k == the first k frames).
- ``num_frames``: frames in a stream (0 for text messages).

Frames are counted on the grid of the target fps: frame ``i`` is at ``i / fps``, and a video has the frames its decoder
yields (``modeling_videollm_mod.video_num_frames``, the one rule: the grid times before the video's end, ``ceil(D *
fps)`` for a video lasting ``D`` seconds, 11 at 2 fps for 5.5 s); a message at frame ``f`` is said after frame ``f``
has been seen.
"""

from __future__ import annotations

import math
from typing import Any

# VideoLLM-online live1+'s `max_num_frames` (10 minutes at 2 fps): longer streams are cut (`clip_to_max_frames`).
MAX_NUM_FRAMES = 1200

# Snapping tolerance in frames: a time already on the grid (0.3 s at 10 fps -> 3.0000000000000004 frames) stays
# on it instead of being pushed one frame later by floating point.
_GRID_EPS = 1e-6


class AnnotationError(ValueError):
    """A malformed annotation file or record; the message names the file, the video id and the field."""

    def __init__(self, file: str, message: str, video_uid: str | None = None, field: str | None = None):
        where = f"{file}"
        if video_uid is not None:
            where += f", video {video_uid!r}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self.file, self.video_uid, self.field = file, video_uid, field


def ceil_frame(time: float, fps: float, min_frame: int, max_frame: int) -> int:
    """Frame index of ``ceil(time * fps) / fps`` clipped to ``[min_frame, max_frame]`` (VideoLLM-online snapping)."""
    return min(max(math.ceil(time * fps - _GRID_EPS), min_frame), max_frame)


def floor_frame(time: float, fps: float, min_frame: int, max_frame: int) -> int:
    """Frame index of ``floor(time * fps) / fps`` clipped to ``[min_frame, max_frame]`` (user queries in live-chat)."""
    return min(max(math.floor(time * fps + _GRID_EPS), min_frame), max_frame)


def message(role: str, content: str = "", time: float | None = None, learn: int = 0, num_frames: int = 0) -> dict:
    """One conversation message with every field present (Arrow needs a fixed struct)."""
    return {"role": role, "content": content, "time": time, "learn": int(learn), "num_frames": int(num_frames)}


def stream(num_frames: int, last_frame: int, fps: float, learn: int | bool = True) -> dict:
    """A stream of ``num_frames`` frames ending at frame ``last_frame``; ``learn=True`` learns all frames."""
    learned = num_frames if learn is True else (0 if learn is False else learn)
    return message("stream", "", last_frame / fps, learned, num_frames)


def require(
    record: Any, field: str, kind: type | tuple[type, ...], file: str, video_uid: str | None = None, prefix: str = ""
) -> Any:
    """Return ``record[field]`` after checking it exists and has type ``kind``; raise ``AnnotationError`` otherwise.

    ``prefix`` locates the record in the file (``"narrations[3]."``) so the error names the full field path.
    """
    name = prefix + field
    if not isinstance(record, dict):
        raise AnnotationError(file, f"expected an object, got {type(record).__name__}", video_uid, name)
    if field not in record:
        raise AnnotationError(file, "missing field", video_uid, name)
    value = record[field]
    if kind is float:
        kind = (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise AnnotationError(file, f"expected {_kind_name(kind)}, got {type(value).__name__}", video_uid, name)
    if isinstance(value, (int, float)) and not math.isfinite(value):
        raise AnnotationError(file, f"expected a finite number, got {value!r}", video_uid, name)
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def load_json(path: str) -> Any:
    """Read an annotation JSON file; a missing or unparsable file raises ``AnnotationError`` naming it."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AnnotationError(path, "annotation file not found") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(path, f"not valid JSON ({e})") from None


def clip_to_max_frames(conversation: list[dict], max_num_frames: int) -> list[dict]:
    """VideoLLM-online's `max_frames_clip`: the conversation up to (not including) the first stream message that would
    take it past ``max_num_frames`` frames; the row then loads only the frames of what is kept."""
    total = 0
    for i, m in enumerate(conversation):
        if m["role"] == "stream":
            if total + m["num_frames"] > max_num_frames:
                return conversation[:i]
            total += m["num_frames"]
    return conversation


def stream_row(
    video_uid: str,
    video: str,
    fps: float,
    total_frames: int,
    conversation: list[dict],
    start_frame: int,
    max_num_frames: int = MAX_NUM_FRAMES,
    **extra,
) -> dict | None:
    """A dataset row (the columns of ``_hub.conversation_features`` + ``extra``) for a conversation whose stream
    starts at frame ``start_frame`` of a video of ``total_frames`` frames, cut to ``max_num_frames``; ``None`` when
    nothing is left to learn (no frame, or no label) after the cut."""
    conversation = clip_to_max_frames(conversation, max_num_frames)
    num_frames = count_stream_frames(conversation)
    if not num_frames or not any(m["learn"] for m in conversation):
        return None
    return {
        "video_uid": video_uid,
        **extra,
        "video": video,
        "fps": float(fps),
        "duration": (total_frames - 1) / fps,
        "start_frame": start_frame,
        "stop_frame": start_frame + num_frames,
        "num_frames": num_frames,
        "conversation": conversation,
    }


def count_stream_frames(conversation: list[dict]) -> int:
    """Total frames of the stream messages of a conversation."""
    return sum(m["num_frames"] for m in conversation if m["role"] == "stream")
