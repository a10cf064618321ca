"""Streaming inference for VideoLLM-MoD: sessions over one stream or a batch of independent streams, and
`stream_generate` over a video, as in the VideoLLM-online demo (`LiveInfer`), on a bounded cache.

Token flow (live1+): the first frame is fed after `<bos>{system}\\n\\n[`; after each frame the decision is taken from
the logits at its last placeholder (`speaks`: VideoLLM-online's rule, P(interval = `,`) below the threshold or `,`
not the most probable token). If the model stays silent the next frame is fed after `,`. Otherwise it speaks:
`]\\nAssistant:` is fed and a reply generated (`generate`, sampling from the `GenerationConfig`) until eos or
`max_new_tokens`; the final token is not fed yet, the next frame follows `{last}\\n[` (an eos closes a reply cut at
`max_new_tokens`). A user query is answered after the current frame: `]\\nUser: {query}\\nAssistant:` (or
`\\nUser: ...` when no stream is open), then generation.

Recorded video in chunks (`chunk_size` > 1): silent frames append a fixed pattern (`,` + placeholders), so a chunk of
frames runs in one forward; the first frame whose decision fires is found, the rest of the chunk is cropped from the
cache and fed again, which gives exactly the frame-by-frame result. `chunk_size="auto"` (the default of
`stream_generate` for recorded video) sizes each chunk by itself: it expects the next reply after as many frames as
the recent gaps between replies, so that a chunk ends at the frame that speaks and no frame is computed twice, and
it doubles the chunk while the stream stays silent past that, up to `MAX_CHUNK` frames (or a quarter of the budget).

Bounded cache (`CacheBudget`): a stream keeps an attention sink (the system prompt and the stream's opening), its
last `keep_turns` turns (a reply, or a query with its answer) and the most recent frames and turns that fit in the
budget (tokens, or bytes of keys and values over all layers: routed layers hold k of a frame's tokens, so a byte
budget holds more frames with Mixture-of-Depths). Before a forward would take a stream past its budget, its oldest
frames and turns (whole ones, by position, in every layer) are evicted until the stream and the new tokens fit in
`1 - EVICTION_SLACK` of the budget, so that evictions come in blocks rather than at every frame.

Position policy past the trained context: positions are re-indexed inside the cache (`positions="reindex"`, as
StreamingVLM): after an eviction the kept tokens take consecutive positions and new tokens continue from there, so a
stream of any length never uses a position beyond its budget. Keys are cached with RoPE applied; they are rotated to
their new positions (`VideoLLMMoDModel.rotate_cached_keys`: RoPE is a rotation per frequency pair, so turning a key
by `delta` positions gives the key of the moved position). Distances inside the recent window are the same under
both policies; what changes is the distance from the window to the sink and kept turns, which `"original"`
positions (kept as fed) push beyond any distance seen in training. `benchmarks/bounded_stream.py` measures both
against the unbounded session within the trained context and past it (results in `benchmarks/README.md`).

Several streams (`VideoLLMMoDBatchStreamSession`, `stream_generate_batch`): one forward serves every stream, each
with its own positions, cache rows (left-padded per layer, since routed layers hold different counts), decisions,
queries and budget; with greedy decoding each stream's events equal those of the stream run alone (sampling draws
from one generator for the batch).

Live sources (`live_videollm_mod.PacedFrames`) feed one frame per forward, paced by their timestamps, the stale ones
dropped when the model falls behind.
"""

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from transformers import GenerationConfig

from .budget_videollm_mod import CacheBudget
from .live_videollm_mod import PacedFrames, is_live_source
from .session_videollm_mod import DEFAULT_THRESHOLD, StreamEngine
from .stream_state_videollm_mod import StreamEvent
from .video_videollm_mod import iter_video_frames

# What a one-stream session answers for its stream.
_STREAM_ATTRIBUTES = ("events", "decisions", "transcript_ids", "pending", "reply_logits", "reply_positions", "time")


class VideoLLMMoDStreamSession(StreamEngine):
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
        chunk_size (`int` or `"auto"`, defaults to 1): frames per forward in `push_frames` (see the module docstring).
        budget ([`CacheBudget`], `dict` or `int`, *optional*): what the cache keeps (a `CacheBudget`, its fields as a
            dict, or tokens; default: `CacheBudget()`, the model's context).
        record_logits (`bool`, defaults to False): keep each reply's logits in `reply_logits` (a vocabulary-sized row
            per generated token: off for long streams).

    Attributes:
        events, decisions, transcript_ids, pending, reply_logits, reply_positions, time: those of its
        [`StreamState`] (`streams[0]`).
    """

    def __init__(self, model, processor, *args, **kwargs):
        super().__init__(model, processor, 1, *args, **kwargs)  # the base's arguments after `num_streams`

    def __getattr__(self, name: str):
        if name in _STREAM_ATTRIBUTES:
            return getattr(self.streams[0], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def num_tokens(self) -> int:
        """Tokens fed so far (evicted ones included)."""
        return self.streams[0].fed

    def push_query(self, text: str, time: float | None = None) -> list[StreamEvent]:
        """Queue a user query. Without `time` (live use) it is answered now, after the current frame; with `time`
        it is answered after the last frame at or before `time` (when a later frame arrives, or `flush()`)."""
        return self.enqueue_query(0, text, time)

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
        self.enqueue_frames(0, frames, times, features)
        return self.run_queued()[0]

    def flush(self) -> list[StreamEvent]:
        """Answer the queries still queued (end of a recorded video); each answer is stamped at its query's time,
        never before it."""
        return self.answer_remaining()[0]


class VideoLLMMoDBatchStreamSession(StreamEngine):
    r"""
    `num_streams` independent streams over one [`VideoLLMMoDForCausalLM`], served by shared forwards: each push feeds
    every stream that has frames in one forward (each its own chunk), and the streams that speak reply together.
    With greedy decoding each stream's events equal those of a [`VideoLLMMoDStreamSession`] over it alone.

    Args:
        num_streams (`int`): how many streams. Other arguments: see [`VideoLLMMoDStreamSession`] (the budget holds
            for each stream).

    Attributes:
        streams (`list[StreamState]`): each stream's events, decisions and transcript.
    """

    def __init__(self, model, processor, num_streams: int, **kwargs):
        super().__init__(model, processor, num_streams, **kwargs)

    def push_query(self, stream: int, text: str, time: float | None = None) -> list[StreamEvent]:
        """Queue a user query for stream `stream` (see [`VideoLLMMoDStreamSession.push_query`])."""
        return self.enqueue_query(stream, text, time)

    def push_frames(
        self,
        frames: Sequence | None = None,
        times: Sequence[Iterable[float] | None] | None = None,
        *,
        features: Sequence[torch.Tensor | None] | None = None,
    ) -> list[list[StreamEvent]]:
        """Feed each stream its frames (`frames[r]` or `features[r]`, None for a stream with none), all streams
        together; `times[r]` as in [`VideoLLMMoDStreamSession.push_frames`]. Returns the events of each stream."""
        given = frames if frames is not None else features
        if given is None or len(given) != len(self.streams):
            raise ValueError(f"give frames or features for each of the {len(self.streams)} streams (None for none)")
        times = times if times is not None else [None] * len(self.streams)
        for r, item in enumerate(given):
            if item is not None:
                self.enqueue_frames(r, times=times[r], **{"frames" if frames is not None else "features": item})
        return self.run_queued()

    def flush(self) -> list[list[StreamEvent]]:
        """Answer every stream's queries still queued."""
        return self.answer_remaining()


class VideoLLMMoDStreamingMixin:
    """Streaming methods of [`VideoLLMMoDForCausalLM`]: sessions, `stream_generate` and `stream_generate_batch`."""

    def stream_session(self, processor, **kwargs) -> VideoLLMMoDStreamSession:
        """A new [`VideoLLMMoDStreamSession`] over this model (kwargs: threshold, max_new_tokens,
        generation_config, system_prompt, chunk_size, budget, record_logits)."""
        return VideoLLMMoDStreamSession(self, processor, **kwargs)

    def batch_stream_session(self, processor, num_streams: int, **kwargs) -> VideoLLMMoDBatchStreamSession:
        """A new [`VideoLLMMoDBatchStreamSession`] of `num_streams` streams over this model."""
        return VideoLLMMoDBatchStreamSession(self, processor, num_streams, **kwargs)

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
        chunk_size: int | str = "auto",
        budget: CacheBudget | dict | int | None = None,
        session: VideoLLMMoDStreamSession | None = None,
    ) -> Iterator[StreamEvent]:
        """Stream a video through the model and yield what is said, as it is said.

        Args:
            video: a video file path; a live source (camera device `/dev/video0`, network URL, `-` for a stream on
                standard input: see `live_videollm_mod`), paced in real time; a (T, H, W, 3) / (T, 3, H, W) uint8
                array or tensor; or an iterator of frames or of `(time, frame)` pairs (a [`PacedFrames`] is live).
            processor: the model's [`VideoLLMMoDProcessor`].
            frame_features: (T, frame_num_tokens, D) pre-computed features instead of `video`.
            fps: frame rate of the stream (default: the frame processor's, 2); videos are decoded at it.
            queries: `(time, text)` user queries, each answered after the last frame at or before its time.
            chunk_size: frames per forward; `"auto"` (default) sizes chunks by itself for recorded video and feeds
                live sources one frame per forward.
            threshold, max_new_tokens, generation_config, system_prompt, budget: see the session.
            session: stream into this session (from `stream_session`) instead of a new one made with the settings
                above, whose own then apply; its `decisions` and `events` stay readable after the stream.
        Yields:
            [`StreamEvent`] `(time, role, text)`.
        """
        sessions = None if session is None else [session]
        settings = dict(
            threshold=threshold,
            max_new_tokens=max_new_tokens,
            generation_config=generation_config,
            system_prompt=system_prompt,
            chunk_size=chunk_size,
            budget=budget,
        )
        for _, event in self._stream_sources([video], [frame_features], processor, fps, [queries], settings, sessions):
            yield event

    @torch.no_grad()
    def stream_generate_batch(
        self,
        videos: Sequence | None = None,
        processor=None,
        *,
        frame_features: Sequence[torch.Tensor] | None = None,
        fps: float | None = None,
        queries: Sequence[Iterable[tuple[float, str]]] | None = None,
        session: VideoLLMMoDBatchStreamSession | None = None,
        **settings,
    ) -> Iterator[tuple[int, StreamEvent]]:
        """`stream_generate` over several videos at once (one batched session): yields `(index, event)`, the index of
        the video in `videos` (or `frame_features`). `queries[i]` are video i's; `session` (from
        `batch_stream_session`, one stream per video) streams into a caller's session, whose settings then apply;
        other arguments as in `stream_generate`. With greedy decoding each video's events equal those of
        `stream_generate` over it."""
        count = len(videos if videos is not None else frame_features or [])
        videos = videos if videos is not None else [None] * count
        frame_features = frame_features if frame_features is not None else [None] * count
        queries = queries if queries is not None else [()] * count
        if not count or not len(videos) == len(frame_features) == len(queries):
            raise ValueError("give one or more videos (or frame_features), and one list of queries per video")
        if session is not None and len(session.streams) != count:
            raise ValueError(f"the session has {len(session.streams)} streams for {count} videos")
        settings.setdefault("chunk_size", "auto")
        sessions = None if session is None else [session]
        yield from self._stream_sources(videos, frame_features, processor, fps, queries, settings, sessions)

    def _stream_sources(self, videos, frame_features, processor, fps, queries, settings, sessions=None):
        if processor is None:
            raise ValueError("stream_generate needs the model's processor (AutoProcessor.from_pretrained(...))")
        fps = float(fps or processor.image_processor.fps)
        sources = [_timed_frames(v, f, fps) for v, f in zip(videos, frame_features, strict=True)]
        live = [_is_live(v) for v in videos]
        if any(live) and len(videos) > 1:
            raise ValueError("a live source streams alone; several streams at once must be recorded videos")
        if settings.get("chunk_size", "auto") == "auto" and any(live):
            settings = {**settings, "chunk_size": 1}
        if sessions is not None:
            session = sessions[0]
        elif len(videos) == 1:
            session = self.stream_session(processor, **settings)
        else:
            session = self.batch_stream_session(processor, len(videos), **settings)
        for r, stream_queries in enumerate(queries):
            for time, text in stream_queries:
                session.enqueue_query(r, text, time)
        key = "features" if frame_features[0] is not None else "frames"
        yield from session.run_sources(sources, key)


def _is_live(video) -> bool:
    return isinstance(video, PacedFrames) or (isinstance(video, str) and is_live_source(video))


def _timed_frames(video, frame_features, fps: float) -> Iterator[tuple[float, object]]:
    """(time, frame or features) pairs from any supported source."""
    if (video is None) == (frame_features is None):
        raise ValueError("give exactly one of video or frame_features")
    if frame_features is not None:
        for i, features in enumerate(frame_features):
            yield i / fps, features
        return
    if isinstance(video, str) and is_live_source(video):
        yield from PacedFrames(iter_video_frames(video, fps), fps)
        return
    if isinstance(video, (str, os.PathLike, bytes)):
        yield from iter_video_frames(video, fps)
        return
    for i, item in enumerate(video):
        if isinstance(item, tuple) and len(item) == 2:
            yield float(item[0]), item[1]
        else:
            yield i / fps, item


__all__ = ["VideoLLMMoDBatchStreamSession", "VideoLLMMoDStreamSession", "VideoLLMMoDStreamingMixin"]
