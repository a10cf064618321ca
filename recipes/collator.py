"""Training collator: prepared dataset rows -> a right-padded batch of VideoLLM-MoD inputs.

Each row (`conversation`, `video`, `fps`, `start_frame`, `stop_frame`, ...; see `data_scripts`) goes through the
`prepare_row`, through the processor, which owns the text format, labels and frame preprocessing. Frames come from pre-computed
features (`{features_dir}/{video_uid}.safetensors`, key `features`, as the original training) or from the videos
under `video_root` (decoded with PyAV; decoded videos can be kept in memory for small datasets).
"""

from __future__ import annotations

import os
import random

import torch

from modeling_videollm_mod import load_video
from modeling_videollm_mod.processing_videollm_mod import as_messages, learned_frames

IGNORE_INDEX = -100


def prepare_row(
    processor,
    row: dict,
    frames=None,
    frame_features: torch.Tensor | None = None,
    video_root: str | os.PathLike | None = None,
) -> dict[str, torch.Tensor]:
    """One prepared dataset row (`conversation`, and `video`, `fps`, `start_frame`, `stop_frame`, `num_frames`) ->
    unpadded model inputs, through the processor's text format, labels and frame preprocessing. `frames` /
    `frame_features` may hold the whole video (sliced to `[start_frame, stop_frame)`) or just the row's frames; with
    neither, the frames are decoded from `video_root/row["video"]` at `row["fps"]`.

    Returns:
        `input_ids`, `labels`: (L,) long; `pixel_values_videos` (T, 3, S, S) or `frame_features` (T, F, D).
    """
    conversation = as_messages(row["conversation"])
    count = sum(int(m.get("num_frames") or 0) for m in conversation if m["role"] == "stream")
    start = int(row.get("start_frame") or 0)
    if frames is None and frame_features is None and count:
        if video_root is None:
            raise ValueError("give frames, frame_features or video_root for a row with stream frames")
        path = os.path.join(video_root, row["video"])
        frames, _ = load_video(path, fps=row.get("fps") or processor.image_processor.fps, start_frame=start,
                               stop_frame=start + count)  # fmt: skip
    source = frames if frames is not None else frame_features
    if source is not None and len(source) != count:
        if len(source) < start + count:
            raise ValueError(
                f"row {row.get('video_uid', '?')}: {len(source)} frames given but the row needs {count} "
                f"(frames [{start}, {start + count}) of the video)"
            )
        source = source[start : start + count]
    encoding = processor(
        conversation,
        videos=source if frames is not None else None,
        frame_features=source if frame_features is not None else None,
        return_labels=True,
    )
    out = {"input_ids": encoding["input_ids"][0], "labels": encoding["labels"][0]}
    for key in ("pixel_values_videos", "frame_features"):
        if key in encoding:
            out[key] = encoding[key]
    return out


class VideoLLMMoDCollator:
    """Collate prepared rows for `SFTTrainer` (`remove_unused_columns=False`, `skip_prepare_dataset`).

    Args:
        processor: a `VideoLLMMoDProcessor`.
        video_root: folder the rows' `video` paths are relative to (raw frames -> `pixel_values_videos`).
        features_dir: folder of pre-computed `{video_uid}.safetensors` (-> `frame_features`); wins over videos.
        cache_videos: keep decoded videos in memory (small datasets, many epochs).
        reply_noise: the probability that a reply of a row is replaced by another reply of the same row, not
            learned: the model then sees wrong replies of its own in its history, as it will when it streams
            free-running, and learns to name what the frames show rather than to continue what it said.
        spurious_replies: the probability that a learned silent frame of a row is followed by a reply of the row that
            is not due there, learned neither as the decision to speak nor as text: the model then sees the spurious
            replies that free-running makes between events (which `reply_noise`, swapping replies where they are due,
            never shows) and learns what follows them: silence, and answers about what the frames show.
        seed: of the replies replaced and inserted.
    Returns (per call):
        `input_ids`, `attention_mask`, `labels` (B, L) right-padded, and `frame_features` (ΣT, F, D) or
        `pixel_values_videos` (ΣT, 3, S, S) with the frames of all rows in batch order.
    """

    def __init__(self, processor, video_root: str | None = None, features_dir: str | None = None, cache_videos=False,
                 reply_noise: float = 0.0, spurious_replies: float = 0.0, seed: int = 0):  # fmt: skip
        if video_root is None and features_dir is None:
            raise ValueError("give video_root (raw frames) or features_dir (pre-computed features)")
        for name, value in (("reply_noise", reply_noise), ("spurious_replies", spurious_replies)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1)")
        self.processor = processor
        self.video_root = video_root
        self.features_dir = features_dir
        self.cache_videos = cache_videos
        self.reply_noise = reply_noise
        self.spurious_replies = spurious_replies
        self.rng = random.Random(seed)
        self._videos: dict[str, torch.Tensor] = {}

    def noisy(self, row: dict) -> dict:
        """The row with each learned reply replaced, with probability `reply_noise`, by another reply of the row
        (then not learned); the row itself is not changed."""
        conversation = as_messages(row["conversation"])
        replies = sorted({m["content"] for m in conversation if m["role"] == "assistant"})
        if len(replies) < 2:
            return row
        noisy = []
        for message in conversation:
            if message["role"] == "assistant" and message["learn"] and self.rng.random() < self.reply_noise:
                other = self.rng.choice([r for r in replies if r != message["content"]])
                message = {**message, "content": other, "learn": 0}
            noisy.append(message)
        return {**row, "conversation": noisy}

    def with_spurious_replies(self, row: dict) -> dict:
        """The row with a reply of the row (not learned) inserted after each learned silent frame with probability
        `spurious_replies`; that frame's decision is not learned either (its label would teach speaking there). The
        stream is split around the reply; its frames and their other labels are unchanged, and so is the row."""
        conversation = as_messages(row["conversation"])
        replies = sorted({m["content"] for m in conversation if m["role"] == "assistant"})
        if not replies:
            return row
        out = []
        for message in conversation:
            count = int(message.get("num_frames") or 0) if message["role"] == "stream" else 0
            learned = learned_frames(message) if count else 0
            start = 0  # the first frame of the stream's piece still to write
            for frame in range(min(learned, count - 1)):  # silent frames: the last one is followed by a turn
                if self.rng.random() < self.spurious_replies:
                    out.append({**message, "num_frames": frame + 1 - start, "learn": frame - start})
                    out.append({"role": "assistant", "content": self.rng.choice(replies), "learn": 0, "num_frames": 0,
                                "time": message.get("time")})  # fmt: skip
                    start = frame + 1
            out.append(message if not start else {**message, "num_frames": count - start, "learn": learned - start})
        return {**row, "conversation": out}

    def frames_of(self, row: dict) -> dict:
        """Keyword arguments of `prepare_row` that give the row's frames: the whole video's features, the whole
        decoded video (cached), or the video folder (the processor then decodes only the row's frames)."""
        if self.features_dir is not None:
            from ..data_scripts.precompute_features import read_features

            return {"frame_features": read_features(self.features_dir, row["video_uid"])}
        if not self.cache_videos:
            return {"video_root": self.video_root}
        path = os.path.join(self.video_root, row["video"])
        if path not in self._videos:
            from modeling_videollm_mod import load_video

            fps = row.get("fps") or self.processor.image_processor.fps
            self._videos[path] = torch.from_numpy(load_video(path, fps=fps)[0])
        return {"frames": self._videos[path]}

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.reply_noise:
            rows = [self.noisy(row) for row in rows]
        if self.spurious_replies:
            rows = [self.with_spurious_replies(row) for row in rows]
        items = [prepare_row(self.processor, row, **self.frames_of(row)) for row in rows]
        length = max(len(item["input_ids"]) for item in items)
        pad_id = self.processor.tokenizer.pad_token_id or 0
        batch = {
            "input_ids": torch.full((len(items), length), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros(len(items), length, dtype=torch.long),
            "labels": torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long),
        }
        for i, item in enumerate(items):
            n = len(item["input_ids"])
            batch["input_ids"][i, :n] = item["input_ids"]
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = item["labels"]
        for key in ("frame_features", "pixel_values_videos"):
            if any(key in item for item in items):
                batch[key] = torch.cat([item[key] for item in items if key in item])
        return batch


__all__ = ["VideoLLMMoDCollator"]
