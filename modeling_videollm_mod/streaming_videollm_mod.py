"""Streaming inference for VideoLLM-MoD: a session per stream and `stream_generate` over a video, as in the
VideoLLM-online demo (`LiveInfer`), on one ever-growing cache.

Token flow (live1+): the first frame is fed after `<bos>{system}\\n\\n[`; after each frame the decision is taken from
the logits at its last placeholder (`speaks`: VideoLLM-online's rule, P(interval = `,`) below the threshold or `,`
not the most probable token). If the model stays silent the next frame is fed after `,`. Otherwise it speaks: `]\\nAssistant:` is fed and a reply generated
(`generate`, sampling from the `GenerationConfig`) until eos or `max_new_tokens`; the final token is not fed yet, the
next frame follows `{last}\\n[` (an eos closes a reply cut at `max_new_tokens`). A user query is answered after the
current frame: `]\\nUser: {query}\\nAssistant:` (or `\\nUser: ...` when no stream is open), then generation.

Recorded videos can be fed in chunks (`chunk_size` > 1): silent frames append a fixed pattern (`,` + placeholders),
so a chunk of frames runs in one forward; the first frame whose decision fires is found, the cache is cropped back to
it and the rest is fed again, which gives exactly the frame-by-frame result.
"""

import copy
import math
import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from transformers import GenerationConfig

from .processing_videollm_mod import STREAM_CLOSE, STREAM_GENERATION_PROMPT, STREAM_OPEN
from .video_videollm_mod import iter_video_frames

# The original demo's threshold on P(interval) (`LiveInfer.frame_token_interval_threshold`).
DEFAULT_THRESHOLD = 0.725


def speaks(probs: torch.Tensor, interval_id: int, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """The streaming decision after each frame, as VideoLLM-online takes it (its demo and its `stream_evaluate`):
    P(interval) below `threshold` is set to 0, then the model speaks unless the interval token is the most probable.

    Args:
        probs: (..., V) the softmax after the last placeholder of each frame.
        interval_id: the frame-interval ("stay silent") token.
        threshold: in [0, 1]; 0 is the plain argmax rule (the original's evaluation), 0.725 the original demo's.
    Returns:
        (...) bool: True where the model speaks.
    """
    p_interval = probs[..., interval_id]
    return (p_interval < threshold) | (probs.argmax(-1) != interval_id)


class StreamEvent(NamedTuple):
    """Something said in a stream: `time` in seconds (video time), `role` `"user"` or `"assistant"`, `text`."""

    time: float
    role: str
    text: str


class StreamContextLimitError(RuntimeError):
    """The stream would run past the model's context (`max_position_embeddings`)."""


class VideoLLMMoDStreamSession:
    r"""
    One stream over a [`VideoLLMMoDForCausalLM`]: push frames (raw or pre-computed features) with timestamps and
    user queries; what is said comes back as [`StreamEvent`]s (returned by the push calls and kept in `events`).

    Args:
        model: the model (eval mode is set by the caller; the session runs under `torch.no_grad`).
        processor: a [`VideoLLMMoDProcessor`] (tokenizer, frame processor, system prompt).
        threshold (`float`, defaults to 0.725): the decision threshold of [`speaks`], in [0, 1].
        max_new_tokens (`int`, defaults to 128): the longest reply.
        generation_config ([`GenerationConfig`], *optional*): sampling settings (default: the model's, greedy).
        system_prompt (`str`, *optional*): overrides the processor's.
        chunk_size (`int`, defaults to 1): frames per forward in `push_frames` (see the module docstring).

    Attributes:
        events (`list[StreamEvent]`); decisions (`list[tuple[float, float]]`: (time, P(interval)) per frame whose
        decision was taken); transcript_ids (`list[int]`: every token fed, then the pending ones);
        reply_logits (`list[torch.Tensor]`: per reply, (n, V) logits of the generated tokens); reply_positions
        (`list[int]`: per reply, the index in `transcript_ids` of its first generated token).
    """

    def __init__(
        self,
        model,
        processor,
        threshold: float = DEFAULT_THRESHOLD,
        max_new_tokens: int = 128,
        generation_config: GenerationConfig | None = None,
        system_prompt: str | None = None,
        chunk_size: int = 1,
    ):
        if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold={threshold!r} must lie in [0, 1]")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
        processor.check_model_config(model.config)
        self.model, self.processor = model, processor
        self.threshold, self.max_new_tokens, self.chunk_size = float(threshold), int(max_new_tokens), int(chunk_size)
        self.generation_config = copy.deepcopy(generation_config or model.generation_config)
        self.generation_config.max_new_tokens = self.max_new_tokens
        self.generation_config.return_dict_in_generate = True
        self.generation_config.output_logits = True
        tokenizer = processor.tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.generation_config.eos_token_id = self.eos_token_id
        self.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.interval_id = processor.frame_token_interval_id
        self.frame_ids = [processor.video_token_id] * processor.frame_num_tokens
        self.max_positions = model.config.text_config.max_position_embeddings

        system = processor.system_prompt if system_prompt is None else system_prompt
        self.transcript_ids: list[int] = []  # every token fed to the model
        self.pending: list[int] = processor.encode_text(processor.render([{"role": "system", "content": system}])[0])
        self.stream_open = False
        self.cache = None
        self.time = 0.0
        self.queries: list[tuple[float | None, str]] = []
        self.events: list[StreamEvent] = []
        self.decisions: list[tuple[float, float]] = []
        self.last_fired = False
        self.reply_logits: list[torch.Tensor] = []
        self.reply_positions: list[int] = []

    # ------------------------------------------------------------------ public API
    @property
    def num_tokens(self) -> int:
        """Tokens in the cache (positions used so far)."""
        return len(self.transcript_ids)

    def push_query(self, text: str, time: float | None = None) -> list[StreamEvent]:
        """Queue a user query. Without `time` (live use) it is answered now, after the current frame; with `time`
        it is answered after the last frame at or before `time` (when a later frame arrives, or `flush()`)."""
        if time is not None and not (math.isfinite(time) and time >= 0):
            raise ValueError(f"query time {time!r} must be a time in the video, >= 0 seconds")
        if time is None:
            self.queries.append((self.time, text))
            return self._answer_due(self.time)
        self.queries.append((float(time), text))
        self.queries.sort(key=lambda q: q[0])
        return []

    def push_frame(self, frame=None, time: float | None = None, *, features: torch.Tensor | None = None):
        """Feed one frame: raw (H, W, 3) / (3, H, W) uint8, or `features` (frame_num_tokens, D) pre-computed.

        Returns the events this frame caused (a reply, or the answer to a due query).
        """
        frames = None if frame is None else self.processor.image_processor.to_frames(frame)
        if frames is not None and frames.shape[0] != 1:
            raise ValueError(f"push_frame takes one frame; got shape {tuple(np.shape(frame))} (use push_frames)")
        return self.push_frames(
            frames, None if time is None else [time], features=None if features is None else features[None]
        )

    def push_frames(self, frames=None, times: Iterable[float] | None = None, *, features: torch.Tensor | None = None):
        """Feed several frames in order ((T, H, W, 3) / (T, 3, H, W) uint8, or `features` (T, F, D)), `chunk_size`
        per forward. `times` default to 0.5 s steps after the current time. Returns the events they caused."""
        if (frames is None) == (features is None):
            raise ValueError("give exactly one of frames or features")
        if frames is not None:
            pixels = self.processor.image_processor.transform(self.processor.image_processor.to_frames(frames))
            inputs, key = pixels, "pixel_values_videos"
        else:
            inputs, key = torch.as_tensor(features), "frame_features"
            expected = (self.processor.frame_num_tokens, self.model.config.vision_config.hidden_size)
            if inputs.dim() != 3 or tuple(inputs.shape[1:]) != expected:
                raise ValueError(
                    f"frame features must have shape (T, {expected[0]}, {expected[1]}); got {tuple(inputs.shape)}"
                )
        count = inputs.shape[0]
        times = [self.time + 0.5 * (i + 1) for i in range(count)] if times is None else [float(t) for t in times]
        if len(times) != count:
            raise ValueError(f"{count} frames but {len(times)} times")
        events, start = [], 0
        while start < count:
            # a chunk never runs past a frame after which a query is due
            stop = min(start + self.chunk_size, count)
            for j in range(start, stop):
                if j + 1 < count and self._query_due(times[j + 1], strict=True) or self._query_due(times[j]):
                    stop = j + 1
                    break
            events += self._answer_due(times[start], strict=True)
            used = self._feed_frames(inputs[start:stop], times[start:stop], key)
            start += used
            events += self._answer_due(self.time) if self._query_due(self.time) else self._act_on_decision()
        return events

    def flush(self) -> list[StreamEvent]:
        """Answer the queries still queued (end of a recorded video); each answer is stamped at its query's time,
        never before it."""
        return self._answer_due(math.inf)

    # ------------------------------------------------------------------ internals
    def _query_due(self, time: float, strict: bool = False) -> bool:
        if not self.queries:
            return False
        return self.queries[0][0] < time if strict else self.queries[0][0] <= time + 1e-9

    def _forward(self, ids: list[int], logits_at: torch.Tensor | None = None, **frames) -> torch.Tensor:
        self._check_context(len(ids))
        device = self.model.device
        with torch.no_grad():
            out = self.model(
                input_ids=torch.tensor([ids], device=device),
                cache=self.cache,
                use_cache=True,
                logits_to_keep=logits_at if logits_at is not None else 1,
                **{k: v.to(device) for k, v in frames.items()},
            )
        self.cache = out.cache
        self.transcript_ids += ids
        return out.logits[0]

    def _check_context(self, new_tokens: int) -> None:
        if self.num_tokens + new_tokens > self.max_positions:
            raise StreamContextLimitError(
                f"the stream reached the model's context limit: {self.num_tokens} tokens fed + {new_tokens} new > "
                f"max_position_embeddings={self.max_positions} (at t={self.time:.2f}s); shorten the video, lower the "
                f"fps, or use a model with a longer context"
            )

    def _feed_frames(self, inputs: torch.Tensor, times: list[float], key: str) -> int:
        """Feed up to len(inputs) frames in one forward; keep them up to the first that speaks. Returns how many."""
        prefix = list(self.pending) + ([] if self.stream_open else self.processor.encode_text(STREAM_OPEN))
        count, frame_len = inputs.shape[0], len(self.frame_ids)
        ids = prefix + self.frame_ids + ([self.interval_id] + self.frame_ids) * (count - 1)
        # logits at the last placeholder of each frame
        last = torch.tensor([len(prefix) + f * (frame_len + 1) + frame_len - 1 for f in range(count)])
        logits = self._forward(ids, logits_at=last.to(self.model.device), **{key: inputs})
        probs = torch.softmax(logits.float(), dim=-1)  # (count, V)
        p_interval = probs[:, self.interval_id].tolist()
        fires = speaks(probs, self.interval_id, self.threshold).tolist()
        used = count
        for f, fire in enumerate(fires):
            if fire or f == count - 1:
                used = f + 1
                break
        if used < count:  # later frames were computed past a frame that speaks: drop them from the cache
            keep = len(self.transcript_ids) - len(ids) + int(last[used - 1]) + 1
            self.cache.crop(keep)
            del self.transcript_ids[keep:]
        self.decisions += list(zip(times[:used], p_interval[:used], strict=True))
        self.pending, self.stream_open, self.time, self.last_fired = [], True, times[used - 1], fires[used - 1]
        return used

    def _act_on_decision(self) -> list[StreamEvent]:
        if self.last_fired:
            return [self._reply(self.processor.encode_text(STREAM_GENERATION_PROMPT))]
        self.pending = [self.interval_id]
        return []

    def _answer_due(self, time: float, strict: bool = False) -> list[StreamEvent]:
        events = []
        while self._query_due(time, strict):
            query_time, text = self.queries.pop(0)
            events.append(StreamEvent(query_time, "user", text))
            self.events.append(events[-1])
            # an open stream is closed with `]`; a pending `,` (the silent decision) is discarded
            query, _, _ = self.processor.render(
                [{"role": "user", "content": text}], add_generation_prompt=True, continuation=True
            )
            prompt = (STREAM_CLOSE if self.stream_open else "") + query
            pending = [] if self.stream_open else self.pending
            events.append(self._reply(pending + self.processor.encode_text(prompt), at=max(self.time, query_time)))
        return events

    def _reply(self, prompt_ids: list[int], at: float | None = None) -> StreamEvent:
        """Feed `prompt_ids` and generate a reply on the same cache; the reply's last token stays pending."""
        self._check_context(len(prompt_ids) + self.max_new_tokens)
        device = self.model.device
        input_ids = torch.tensor([self.transcript_ids + prompt_ids], device=device)
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            cache=self.cache,
            generation_config=self.generation_config,
        )
        new = out.sequences[0, input_ids.shape[1] :].tolist()
        self.cache = out["cache"]
        self.reply_positions.append(len(self.transcript_ids) + len(prompt_ids))
        self.transcript_ids += prompt_ids + new[:-1]  # generate does not feed its last token
        self.reply_logits.append(torch.stack([step[0] for step in out.logits]).float().cpu())
        text = self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()
        self.pending = new[-1:] + ([] if new[-1] == self.eos_token_id else [self.eos_token_id])
        self.stream_open = False
        event = StreamEvent(self.time if at is None else at, "assistant", text)
        self.events.append(event)
        return event


class VideoLLMMoDStreamingMixin:
    """Streaming methods of [`VideoLLMMoDForCausalLM`]: `stream_session` and `stream_generate`."""

    def stream_session(self, processor, **kwargs) -> VideoLLMMoDStreamSession:
        """A new [`VideoLLMMoDStreamSession`] over this model (kwargs: threshold, max_new_tokens,
        generation_config, system_prompt, chunk_size)."""
        return VideoLLMMoDStreamSession(self, processor, **kwargs)

    @torch.no_grad()
    def stream_generate(
        self,
        video=None,
        processor=None,
        *,
        frame_features: torch.Tensor | None = None,
        fps: float | None = None,
        queries: Iterable[tuple[float, str]] = (),
        threshold: float = DEFAULT_THRESHOLD,
        max_new_tokens: int = 128,
        generation_config: GenerationConfig | None = None,
        system_prompt: str | None = None,
        chunk_size: int = 1,
        session: VideoLLMMoDStreamSession | None = None,
    ) -> Iterator[StreamEvent]:
        """Stream a video through the model and yield what is said, as it is said.

        Args:
            video: a video file path; a (T, H, W, 3) / (T, 3, H, W) uint8 array or tensor; or an iterator of frames
                or of `(time, frame)` pairs.
            processor: the model's [`VideoLLMMoDProcessor`].
            frame_features: (T, frame_num_tokens, D) pre-computed features instead of `video`.
            fps: frame rate of the stream (default: the frame processor's, 2); file videos are decoded at it.
            queries: `(time, text)` user queries, each answered after the last frame at or before its time.
            threshold, max_new_tokens, generation_config, system_prompt, chunk_size: see the session.
            session: stream into this session (from `stream_session`) instead of a new one made with the settings
                above, whose own then apply; its `decisions` and `events` stay readable after the stream.
        Yields:
            [`StreamEvent`] `(time, role, text)`.
        """
        if processor is None:
            raise ValueError("stream_generate needs the model's processor (AutoProcessor.from_pretrained(...))")
        fps = float(fps or processor.image_processor.fps)
        if session is None:
            session = self.stream_session(
                processor,
                threshold=threshold,
                max_new_tokens=max_new_tokens,
                generation_config=generation_config,
                system_prompt=system_prompt,
                chunk_size=chunk_size,
            )
        for time, text in queries:
            session.push_query(text, time)
        key = "features" if frame_features is not None else "frames"
        for times, batch in _chunks(_timed_frames(video, frame_features, fps), session.chunk_size):
            yield from session.push_frames(times=times, **{key: batch})
        yield from session.flush()


def _timed_frames(video, frame_features, fps: float) -> Iterator[tuple[float, object]]:
    """(time, frame or features) pairs from any supported source."""
    if (video is None) == (frame_features is None):
        raise ValueError("give exactly one of video or frame_features")
    if frame_features is not None:
        for i, features in enumerate(frame_features):
            yield i / fps, features
        return
    if isinstance(video, (str, os.PathLike, bytes)):
        yield from iter_video_frames(video, fps)
        return
    for i, item in enumerate(video):
        if isinstance(item, tuple) and len(item) == 2:
            yield float(item[0]), item[1]
        else:
            yield i / fps, item


def _chunks(pairs: Iterator[tuple[float, object]], size: int) -> Iterator[tuple[list[float], torch.Tensor]]:
    buffer: list[tuple[float, object]] = []
    for pair in pairs:
        buffer.append(pair)
        if len(buffer) == size:
            yield _stack(buffer)
            buffer = []
    if buffer:
        yield _stack(buffer)


def _stack(buffer: list[tuple[float, object]]) -> tuple[list[float], torch.Tensor]:
    items = [torch.as_tensor(np.asarray(item)) if not isinstance(item, torch.Tensor) else item for _, item in buffer]
    shapes = {tuple(item.shape) for item in items}
    if len(shapes) > 1:
        raise ValueError(f"frames of a stream must share a shape; got {sorted(shapes)}")
    return [t for t, _ in buffer], torch.stack(items)


__all__ = [
    "DEFAULT_THRESHOLD",
    "StreamContextLimitError",
    "StreamEvent",
    "VideoLLMMoDStreamSession",
    "VideoLLMMoDStreamingMixin",
    "speaks",
]
