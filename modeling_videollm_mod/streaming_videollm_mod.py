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

import copy
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from .live_videollm_mod import PacedFrames, is_live_source
from .processing_videollm_mod import STREAM_CLOSE, STREAM_GENERATION_PROMPT, STREAM_OPEN
from .video_videollm_mod import iter_video_frames

# The original demo's threshold on P(interval) (`LiveInfer.frame_token_interval_threshold`).
DEFAULT_THRESHOLD = 0.725
# Largest automatic chunk: on the CPU benchmark the per-frame cost still falls up to ~128 frames (1,408 tokens) per
# forward, as each forward's fixed cost (reading the weights) is shared by more frames (benchmarks/README.md).
MAX_CHUNK = 128
# Share of the budget an eviction frees beyond what the new tokens need: evictions come in blocks, not every frame.
EVICTION_SLACK = 0.125
POSITION_POLICIES = ("reindex", "original")


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
    """The stream would use positions past the model's context (`max_position_embeddings`)."""


@dataclass
class CacheBudget:
    r"""
    How much of each stream a session keeps in its cache (see the module docstring for the eviction rule).

    Args:
        max_tokens (`int`, *optional*): tokens of the stream in the cache (default: the stream length the model was
            trained on, `config.trained_stream_length`, else its context, `max_position_embeddings`; the default gives
            way when the stream's sink and the tokens of one input or reply alone exceed it).
        max_bytes (`int`, *optional*): bytes of the stream's keys and values over all layers (no limit by default).
        keep_turns (`int`, defaults to 4): the last turns (replies, queries with their answers) stay when older
            frames go; older turns go with the frames of their time.
        positions (`str`, defaults to `"reindex"`): `"reindex"`, kept tokens take consecutive positions after an
            eviction (keys rotated to them); `"original"`, positions stay as fed (a stream then stops with
            `StreamContextLimitError` at the model's context).
    """

    max_tokens: int | None = None
    max_bytes: int | None = None
    keep_turns: int = 4
    positions: str = "reindex"

    def __post_init__(self):
        for name in ("max_tokens", "max_bytes"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise ValueError(f"CacheBudget {name}={value!r} must be a positive integer")
        if not (isinstance(self.keep_turns, int) and self.keep_turns >= 0):
            raise ValueError(f"CacheBudget keep_turns={self.keep_turns!r} must be an integer >= 0")
        if self.positions not in POSITION_POLICIES:
            raise ValueError(f"CacheBudget positions={self.positions!r} must be one of {POSITION_POLICIES}")

    @classmethod
    def of(cls, budget: "CacheBudget | dict | int | None") -> "CacheBudget":
        """A budget from what a session takes: a `CacheBudget`, its fields as a dict (handy with remote code, where
        the class is not importable by name), a number of tokens, or None (the default)."""
        if budget is None:
            return cls()
        if isinstance(budget, dict):
            return cls(**budget)
        if isinstance(budget, int):
            return cls(max_tokens=budget)
        return budget


SINK, FRAME, TURN = "sink", "frame", "turn"


class Segment:
    """A stretch of a stream's cache: the sink, one frame (with the `,` before it) or one turn; `length` tokens from
    position `start`, fed from `transcript_ids[origin]` on; `frames`: 1 for a frame."""

    __slots__ = ("kind", "start", "origin", "length", "frames")

    def __init__(self, kind: str, start: int, origin: int, frames: int):
        self.kind, self.start, self.origin, self.length, self.frames = kind, start, origin, 0, frames

    def __repr__(self) -> str:
        return f"Segment({self.kind}, start={self.start}, origin={self.origin}, length={self.length})"


class ChunkSchedule:
    """Frames per forward of a stream: a fixed number, or `"auto"` (see the module docstring)."""

    def __init__(self, size: int | str, largest: int = MAX_CHUNK):
        if size != "auto" and not (isinstance(size, int) and size >= 1):
            raise ValueError(f"chunk_size={size!r} must be an integer >= 1 or 'auto'")
        self.fixed = None if size == "auto" else size
        self.largest = max(1, largest)
        self.gap: int | None = None  # recent frames between replies (rounded running mean)
        self.silent = 0  # frames since the last reply
        self.last = 1  # the last automatic size

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.gap is not None and self.silent < self.gap:
            return min(self.largest, self.gap - self.silent)
        return min(self.largest, 2 * self.last)

    def record(self, requested: int, used: int, fired: bool) -> None:
        """A forward asked for `requested` frames, kept `used`; `fired`: its last kept frame speaks."""
        self.last = requested
        if fired:
            gap = self.silent + used
            self.gap = gap if self.gap is None else round((self.gap + gap) / 2)
            self.silent = 0
        else:
            self.silent += used


class StreamState:
    """One stream of a session: what it fed, decided and said.

    Attributes:
        events (`list[StreamEvent]`); decisions (`list[tuple[float, float]]`: (time, P(interval)) per frame whose
        decision was taken); transcript_ids (`list[int]`: every token fed, evicted ones included); pending
        (`list[int]`: tokens to feed before the next input); reply_logits (`list[torch.Tensor]`: with
        `record_logits`, per reply, (n, V) logits of the generated tokens); reply_positions (`list[int]`: per reply,
        the index in `transcript_ids` of its first generated token); segments (`list[Segment]`: what the cache holds
        of the stream, in order); time (video time of the last frame fed); position (the next token's position).
    """

    def __init__(self, system_ids: list[int], chunk_size: int | str, largest_chunk: int):
        self.pending = list(system_ids)
        self.stream_open = False
        self.time = 0.0
        self.position = 0
        self.queries: list[tuple[float, str]] = []
        self.queue: list[tuple[float, torch.Tensor]] = []  # frames pushed, not fed yet
        self.events: list[StreamEvent] = []
        self.decisions: list[tuple[float, float]] = []
        self.transcript_ids: list[int] = []
        self.segments: list[Segment] = []
        self.last_fired = False
        self.reply_logits: list[torch.Tensor] = []
        self.reply_positions: list[int] = []
        self.chunks = ChunkSchedule(chunk_size, largest_chunk)

    def query_due(self, time: float, strict: bool = False) -> bool:
        if not self.queries:
            return False
        return self.queries[0][0] < time if strict else self.queries[0][0] <= time + 1e-9

    def append(self, ids: list[int], marks: list[tuple[int, str, int]]) -> None:
        """Record `ids` as fed; `marks` (offset, kind, frames) start new segments, other tokens extend the last."""
        done = 0
        for offset, kind, frames in [*marks, (len(ids), None, 0)]:
            if offset > done:
                self.segments[-1].length += offset - done
                done = offset
            if kind is not None:
                self.segments.append(Segment(kind, self.position + offset, len(self.transcript_ids) + offset, frames))
        self.transcript_ids += ids
        self.position += len(ids)

    def truncate(self, position: int) -> None:
        """Forget what was fed from `position` on (a chunk cut at the frame that speaks)."""
        dropped = self.position - position
        del self.transcript_ids[len(self.transcript_ids) - dropped :]
        self.segments = [s for s in self.segments if s.start < position]
        last = self.segments[-1]
        last.length = min(last.length, position - last.start)
        self.position = position


class _RowsDone(StoppingCriteria):
    """Rows of a batched reply that have nothing to say are done from the first token."""

    def __init__(self, done: torch.Tensor):
        super().__init__()
        self.done = done

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return self.done.to(input_ids.device)


class _StreamSessionBase:
    """The streaming engine shared by the one-stream and the batched session: every forward feeds the streams that
    have input (the others are padding rows), decisions and replies are per stream."""

    def __init__(
        self,
        model,
        processor,
        num_streams: int = 1,
        threshold: float = DEFAULT_THRESHOLD,
        max_new_tokens: int = 128,
        generation_config: GenerationConfig | None = None,
        system_prompt: str | None = None,
        chunk_size: int | str = 1,
        budget: CacheBudget | dict | int | None = None,
        record_logits: bool = False,
    ):
        if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold={threshold!r} must lie in [0, 1]")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if num_streams < 1:
            raise ValueError(f"num_streams={num_streams} must be >= 1")
        ChunkSchedule(chunk_size)  # checks it
        processor.check_model_config(model.config)
        self.model, self.processor = model, processor
        self.threshold, self.max_new_tokens, self.chunk_size = float(threshold), int(max_new_tokens), chunk_size
        self.generation_config = copy.deepcopy(generation_config or model.generation_config)
        self.generation_config.max_new_tokens = self.max_new_tokens
        self.generation_config.return_dict_in_generate = True
        self.generation_config.output_logits = self.record_logits = record_logits
        tokenizer = processor.tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.generation_config.eos_token_id = self.eos_token_id
        self.generation_config.pad_token_id = self.pad_token_id
        self.interval_id = processor.frame_token_interval_id
        self.frame_ids = [processor.video_token_id] * processor.frame_num_tokens
        self.open_ids = processor.encode_text(STREAM_OPEN)
        self.speak_ids = processor.encode_text(STREAM_GENERATION_PROMPT)
        self.max_positions = model.config.text_config.max_position_embeddings
        self.budget = CacheBudget.of(budget)
        self.limits = self._limits()
        self.token_bytes, self.frame_bytes = self._entry_bytes(model.config)
        self.input_key: str | None = None  # "pixel_values_videos" or "frame_features", fixed by the first frames

        system = processor.system_prompt if system_prompt is None else system_prompt
        system_ids = processor.encode_text(processor.render([{"role": "system", "content": system}])[0])
        frame_cost = self.cost(len(self.frame_ids) + 1, 1)
        largest = min((limit // (4 * cost) for limit, cost in zip(self.limits, frame_cost, strict=True) if limit))
        self.streams = [StreamState(system_ids, chunk_size, min(MAX_CHUNK, largest)) for _ in range(num_streams)]
        self.cache = None

    # ------------------------------------------------------------------ budget
    def _limits(self) -> tuple[int, int | None]:
        """(max tokens, max bytes) of a stream's cache."""
        max_tokens = self.budget.max_tokens
        if max_tokens is None:
            max_tokens = min(self.model.config.trained_stream_length or self.max_positions, self.max_positions)
        if self.budget.positions == "reindex" and max_tokens > self.max_positions:
            raise ValueError(
                f"CacheBudget max_tokens={max_tokens} exceeds the model's context (max_position_embeddings="
                f"{self.max_positions}): re-indexed positions would run past it"
            )
        return max_tokens, self.budget.max_bytes

    def describe_budget(self) -> str:
        """The cache budget of each stream in words, saying where it came from (for a command's summary)."""
        tokens, max_bytes = self.limits
        if self.budget.max_tokens is not None:
            origin = "as given"
        elif self.model.config.trained_stream_length is not None:
            origin = "the stream length the model was trained on"
        else:
            origin = "the model's context: it records no trained stream length"
        described = f"{tokens} tokens ({origin})"
        return described + (f" and {max_bytes / 2**20:.1f} MiB" if max_bytes is not None else "")

    def _entry_bytes(self, config) -> tuple[int, int]:
        """Bytes of keys and values, over all layers, of one text token and of one frame's placeholders."""
        text = config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        per_layer = 2 * text.num_key_value_heads * head_dim * self.model.dtype.itemsize  # keys + values, one token
        routed = len(config.mod_layers)
        dense = text.num_hidden_layers - routed
        # a frame's placeholders: every one in a dense layer, k of them in a routed layer
        frame = dense * config.frame_num_tokens + routed * config.mod_keep_per_frame
        return per_layer * text.num_hidden_layers, per_layer * frame

    def cost(self, tokens: int, frames: int) -> tuple[int, int]:
        """(tokens, bytes) in the cache of `tokens` tokens of which `frames` frames' placeholders."""
        text_tokens = tokens - frames * len(self.frame_ids)
        return tokens, text_tokens * self.token_bytes + frames * self.frame_bytes

    def held(self, stream: StreamState) -> tuple[int, int]:
        """(tokens, bytes) the stream holds in the cache."""
        costs = [self.cost(s.length, s.frames) for s in stream.segments]
        return sum(c[0] for c in costs), sum(c[1] for c in costs)

    def _fits(self, cost: tuple[int, int], scale: float = 1.0) -> bool:
        return all(limit is None or value <= limit * scale for value, limit in zip(cost, self.limits, strict=True))

    def _make_room(self, needs: dict[int, tuple[int, int]]) -> None:
        """Evict from each stream `r` what keeps `needs[r] = (tokens, frames)` new tokens from fitting its budget."""
        keep = {}
        for r, (tokens, frames) in needs.items():
            stream = self.streams[r]
            need = self.cost(tokens, frames)
            costs = [self.cost(s.length, s.frames) for s in stream.segments]
            total = [sum(c[i] for c in costs) + need[i] for i in range(2)]
            if self._fits(total):
                continue
            turns = [i for i, s in enumerate(stream.segments) if s.kind == TURN]
            kept_turns = set(turns[len(turns) - self.budget.keep_turns :]) if self.budget.keep_turns else set()
            # oldest first: frames and older turns down to the slack, then the kept turns if still needed; never the
            # sink, nor the last segment (the frame or turn that the new tokens may extend)
            evictable = range(1, len(costs) - 1)
            order = [i for i in evictable if i not in kept_turns] + [i for i in evictable if i in kept_turns]
            dropped = set()
            for i in order:
                if self._fits(total, 1 - EVICTION_SLACK) or (i in kept_turns and self._fits(total)):
                    break
                dropped.add(i)
                total = [total[j] - costs[i][j] for j in range(2)]
            over = [limit is not None and value > limit for value, limit in zip(total, self.limits, strict=True)]
            # The default token budget (the trained length) gives way when the sink and the new tokens alone exceed
            # it (a long query to a model trained on short streams): the cache then holds just those.
            if over[1] or (over[0] and self.budget.max_tokens is not None):
                raise ValueError(
                    f"the cache budget {self.budget} cannot hold the stream's sink and {tokens} new tokens "
                    f"({tuple(total)} > {self.limits}); raise it or lower max_new_tokens"
                )
            keep[r] = [s for i, s in enumerate(stream.segments) if i not in dropped]
        if keep:
            self._evict(keep)

    def _evict(self, keep: dict[int, list[Segment]]) -> None:
        """Keep only the segments `keep[r]` of stream `r` (all of the others), re-indexing positions if the policy
        says so."""
        reindex = self.budget.positions == "reindex"
        position_map = self._position_map()
        for r, segments in keep.items():
            stream, row = self.streams[r], position_map[r]
            row.fill_(-1)
            start = 0
            for segment in segments:
                new = start if reindex else segment.start
                old = torch.arange(segment.start, segment.start + segment.length)
                row[old] = old - segment.start + new
                segment.start, start = new, new + segment.length
            stream.segments = segments
            if reindex:
                stream.position = start
        rotate = self.model.model.rotate_cached_keys if reindex else None
        self.cache.remap_positions(position_map.to(self.model.device), rotate)

    def _position_map(self) -> torch.Tensor:
        """(B, P) the identity map of every stream's positions (-1 past a stream's last position)."""
        width = max(s.position for s in self.streams)
        positions = torch.arange(width)
        return torch.stack([torch.where(positions < s.position, positions, -1) for s in self.streams])

    def _truncate(self, cuts: dict[int, int]) -> None:
        """Drop what stream `r` fed from position `cuts[r]` on, in the cache and in its records."""
        position_map = self._position_map()
        for r, cut in cuts.items():
            position_map[r, cut:] = -1
            self.streams[r].truncate(cut)
        self.cache.remap_positions(position_map.to(self.model.device))

    def _check_context(self, needs: dict[int, int]) -> None:
        for r, tokens in needs.items():
            stream = self.streams[r]
            if stream.position + tokens > self.max_positions:
                raise StreamContextLimitError(
                    f"the stream reached the model's context limit: position {stream.position} + {tokens} new "
                    f"tokens > max_position_embeddings={self.max_positions} (at t={stream.time:.2f}s); use "
                    f'CacheBudget(positions="reindex") or a smaller max_tokens'
                )

    # ------------------------------------------------------------------ forward
    def _forward(self, rows: dict[int, tuple[list[int], list[int], list]], frames: torch.Tensor | None = None):
        """One forward over the streams in `rows` (`r: (ids, offsets, marks)`), the others padding rows. Returns
        `{r: (len(offsets), V) logits at those offsets of its ids}`."""
        self._make_room({r: (len(ids), sum(m[2] for m in marks)) for r, (ids, _, marks) in rows.items()})
        self._check_context({r: len(ids) for r, (ids, _, _) in rows.items()})
        length = max(len(ids) for ids, _, _ in rows.values())
        batch = len(self.streams)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        valid = torch.zeros(batch, length, dtype=torch.long)
        positions = torch.zeros(batch, length, dtype=torch.long)
        columns = {}
        for r, (ids, offsets, _) in rows.items():
            pad = length - len(ids)
            input_ids[r, pad:] = torch.tensor(ids)
            valid[r, pad:] = 1
            positions[r] = (torch.arange(length) - pad + self.streams[r].position).clamp(min=0)
            columns[r] = [pad + offset for offset in offsets]
        keep = sorted({c for cols in columns.values() for c in cols})
        device = self.model.device
        extra = {} if frames is None else {self.input_key: frames.to(device)}
        with torch.no_grad():
            out = self.model(
                input_ids=input_ids.to(device),
                attention_mask=valid.to(device),
                position_ids=positions.to(device),
                cache=self.cache,
                use_cache=True,
                logits_to_keep=torch.tensor(keep, device=device),
                **extra,
            )
        self.cache = out.cache
        for r, (ids, _, marks) in rows.items():
            self.streams[r].append(ids, marks)
        index = {c: i for i, c in enumerate(keep)}
        return {r: out.logits[r, [index[c] for c in cols]] for r, cols in columns.items()}

    def _feed_frames(self, plan: dict[int, int]) -> None:
        """Feed `plan[r]` queued frames of stream `r`, all streams in one forward; each stream keeps its frames up to
        the first that speaks (the rest stay queued)."""
        frame_len, rows, frames = len(self.frame_ids), {}, []
        for r in sorted(plan):
            stream, count = self.streams[r], plan[r]
            prefix = stream.pending + ([] if stream.stream_open else self.open_ids)
            ids = prefix + self.frame_ids + ([self.interval_id] + self.frame_ids) * (count - 1)
            last = [len(prefix) + f * (frame_len + 1) + frame_len - 1 for f in range(count)]  # last placeholders
            # a frame's segment holds the `,` fed before it; after a turn or the sink, `\n[` stays with them
            first = 0 if stream.pending == [self.interval_id] else len(prefix)
            marks = [] if stream.segments else [(0, SINK, 0)]
            marks += [(first, FRAME, 1)] + [(len(prefix) + f * (frame_len + 1) - 1, FRAME, 1) for f in range(1, count)]
            rows[r] = (ids, last, marks)
            frames += [frame for _, frame in stream.queue[:count]]
        logits = self._forward(rows, torch.stack(frames))
        cuts = {}
        for r, row_logits in logits.items():
            stream, count = self.streams[r], plan[r]
            probs = torch.softmax(row_logits.float(), dim=-1)  # (count, V)
            p_interval = probs[:, self.interval_id].tolist()
            fires = speaks(probs, self.interval_id, self.threshold).tolist()
            used = next((f + 1 for f, fire in enumerate(fires) if fire), count)
            if used < count:  # later frames were computed past a frame that speaks: drop them from the cache
                ids, last, _ = rows[r]
                cuts[r] = stream.position - len(ids) + last[used - 1] + 1
            times = [t for t, _ in stream.queue[:used]]
            stream.decisions += list(zip(times, p_interval[:used], strict=True))
            stream.pending, stream.stream_open, stream.time, stream.last_fired = [], True, times[-1], fires[used - 1]
            stream.chunks.record(count, used, fires[used - 1])
            del stream.queue[:used]
        if cuts:
            self._truncate(cuts)

    # ------------------------------------------------------------------ replies
    def _generate(self, prompts: dict[int, tuple[list[int], int, float]]) -> dict[int, StreamEvent]:
        """Reply in the streams of `prompts` (`r: (ids, offset of the turn in ids, event time)`), all at once on the
        shared cache; each reply's last token stays pending."""
        self._make_room({r: (len(ids) + self.max_new_tokens, 0) for r, (ids, _, _) in prompts.items()})
        self._check_context({r: len(ids) + self.max_new_tokens for r, (ids, _, _) in prompts.items()})
        batch, length = len(self.streams), max(len(ids) for ids, _, _ in prompts.values())
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        valid = torch.zeros(batch, length, dtype=torch.long)
        positions = torch.zeros(batch, length, dtype=torch.long)
        for r, stream in enumerate(self.streams):
            # a row with nothing to say feeds one eos (generate takes a masked last column for right padding); it is
            # dropped with what the row generates
            ids = prompts[r][0] if r in prompts else [self.eos_token_id]
            pad = length - len(ids)
            input_ids[r, pad:] = torch.tensor(ids, dtype=torch.long)
            valid[r, pad:] = 1
            positions[r] = (torch.arange(length) - pad + stream.position).clamp(min=0)
        past = self.cache.get_seq_length() if self.cache is not None else 0
        device = self.model.device
        silent = torch.tensor([r not in prompts for r in range(batch)])
        out = self.model.generate(
            input_ids=torch.cat([torch.full((batch, past), self.pad_token_id), input_ids], 1).to(device),
            attention_mask=torch.cat([torch.ones(batch, past, dtype=torch.long), valid], 1).to(device),
            position_ids=positions.to(device),
            cache=self.cache,
            generation_config=self.generation_config,
            stopping_criteria=StoppingCriteriaList([_RowsDone(silent)]) if bool(silent.any()) else None,
        )
        self.cache = out["cache"]
        generated = out.sequences[:, past + length :].tolist()
        events = {}
        for r, (ids, turn, time) in prompts.items():
            stream, new = self.streams[r], generated[r]
            if self.eos_token_id in new:
                new = new[: new.index(self.eos_token_id) + 1]
            stream.reply_positions.append(len(stream.transcript_ids) + len(ids))
            marks = ([] if stream.segments else [(0, SINK, 0)]) + [(turn, TURN, 0)]
            stream.append(ids + new[:-1], marks)  # generate does not feed its last token
            if self.record_logits:
                stream.reply_logits.append(torch.stack([step[r] for step in out.logits[: len(new)]]).float().cpu())
            stream.pending = new[-1:] + ([] if new[-1] == self.eos_token_id else [self.eos_token_id])
            stream.stream_open = False
            text = self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()
            events[r] = StreamEvent(time, "assistant", text)
            stream.events.append(events[r])
        if batch > 1:  # drop what the batch fed past each stream's reply (or for the silent streams)
            self._truncate({r: stream.position for r, stream in enumerate(self.streams)})
        return events

    def _replies(self, decide: set[int], due: dict[int, tuple[float, bool]]) -> list[list[StreamEvent]]:
        """Replies of the streams in `decide` (their last frame speaks) and answers to each stream's queries due at
        `due[r] = (time, strict)`, one reply per stream per round, the streams of a round generating together."""
        events = [[] for _ in self.streams]
        decide = set(decide)
        while True:
            prompts = {}
            for r, stream in enumerate(self.streams):
                if r in decide:
                    decide.discard(r)
                    prompts[r] = (self.speak_ids, 0, stream.time)
                elif r in due and stream.query_due(*due[r]):
                    query_time, text = stream.queries.pop(0)
                    events[r].append(StreamEvent(query_time, "user", text))
                    stream.events.append(events[r][-1])
                    # an open stream is closed with `]`; a pending `,` (the silent decision) is discarded
                    query, _, _ = self.processor.render(
                        [{"role": "user", "content": text}], add_generation_prompt=True, continuation=True
                    )
                    prefix = [] if stream.stream_open else stream.pending
                    query_ids = self.processor.encode_text((STREAM_CLOSE if stream.stream_open else "") + query)
                    prompts[r] = (prefix + query_ids, len(prefix), max(stream.time, query_time))
            if not prompts:
                return events
            for r, event in self._generate(prompts).items():
                events[r].append(event)

    # ------------------------------------------------------------------ the loop
    def _step(self) -> list[list[StreamEvent]]:
        """Feed the next chunk of every stream with queued frames, in one forward, and act on the decisions."""
        active = [r for r, stream in enumerate(self.streams) if stream.queue]
        # queries due strictly before a stream's next frame are answered first
        events = self._replies(set(), {r: (self.streams[r].queue[0][0], True) for r in active})
        plan = {}
        for r in active:
            stream = self.streams[r]
            times = [t for t, _ in stream.queue]
            stop = min(len(times), stream.chunks.next_size())
            for j in range(stop):  # a chunk never runs past a frame after which a query is due
                if (j + 1 < len(times) and stream.query_due(times[j + 1], strict=True)) or stream.query_due(times[j]):
                    stop = j + 1
                    break
            plan[r] = stop
        self._feed_frames(plan)
        decide = set()
        for r in plan:
            stream = self.streams[r]
            if stream.query_due(stream.time):
                continue  # the answer to the query replaces the decision
            if stream.last_fired:
                decide.add(r)
            else:
                stream.pending = [self.interval_id]
        later = self._replies(decide, {r: (self.streams[r].time, False) for r in plan})
        return [a + b for a, b in zip(events, later, strict=True)]

    def _drain(self) -> list[list[StreamEvent]]:
        events = [[] for _ in self.streams]
        while any(stream.queue for stream in self.streams):
            for r, new in enumerate(self._step()):
                events[r] += new
        return events

    def _queue_frames(self, r: int, frames=None, times: Iterable[float] | None = None, features=None) -> None:
        """Prepare frames ((T, H, W, 3) / (T, 3, H, W) uint8) or `features` (T, F, D) and queue them for stream r."""
        if (frames is None) == (features is None):
            raise ValueError("give exactly one of frames or features")
        if frames is not None:
            image_processor = self.processor.image_processor
            inputs, key = image_processor.transform(image_processor.to_frames(frames)), "pixel_values_videos"
        else:
            inputs, key = torch.as_tensor(features), "frame_features"
            expected = (self.processor.frame_num_tokens, self.model.config.vision_config.hidden_size)
            if inputs.dim() != 3 or tuple(inputs.shape[1:]) != expected:
                raise ValueError(
                    f"frame features must have shape (T, {expected[0]}, {expected[1]}); got {tuple(inputs.shape)}"
                )
        if self.input_key not in (None, key):
            raise ValueError(f"a session takes raw frames or features, not both (it was fed {self.input_key})")
        self.input_key = key
        stream = self.streams[r]
        count = inputs.shape[0]
        start = stream.queue[-1][0] if stream.queue else stream.time
        times = [start + 0.5 * (i + 1) for i in range(count)] if times is None else [float(t) for t in times]
        if len(times) != count:
            raise ValueError(f"{count} frames but {len(times)} times")
        stream.queue += list(zip(times, inputs, strict=True))

    def _push_query(self, r: int, text: str, time: float | None) -> list[StreamEvent]:
        stream = self.streams[r]
        if time is not None and not (math.isfinite(time) and time >= 0):
            raise ValueError(f"query time {time!r} must be a time in the video, >= 0 seconds")
        if time is None:
            stream.queries.append((stream.time, text))
            return self._replies(set(), {r: (stream.time, False)})[r]
        stream.queries.append((float(time), text))
        stream.queries.sort(key=lambda q: q[0])
        return []

    def _run_sources(self, sources: Sequence[Iterator[tuple[float, object]]], key: str):
        """Stream `sources[r]` ((time, frame or features) pairs) into stream r, reading each only as far as its next
        chunk; yield `(r, event)` as they happen, then the answers to the queries left."""
        done = [False] * len(sources)
        while True:
            for r, source in enumerate(sources):
                stream = self.streams[r]
                while not done[r] and len(stream.queue) < stream.chunks.next_size():
                    item = next(source, None)
                    if item is None:
                        done[r] = True
                    else:
                        self._queue_frames(r, times=[item[0]], **{key: _as_batch(item[1])})
            if not any(stream.queue for stream in self.streams):
                break
            for r, events in enumerate(self._step()):
                yield from ((r, event) for event in events)
        for r, events in enumerate(self._replies(set(), {r: (math.inf, False) for r in range(len(self.streams))})):
            yield from ((r, event) for event in events)


# What a one-stream session answers for its stream.
_STREAM_ATTRIBUTES = ("events", "decisions", "transcript_ids", "pending", "reply_logits", "reply_positions", "time")


class VideoLLMMoDStreamSession(_StreamSessionBase):
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
        return len(self.streams[0].transcript_ids)

    def push_query(self, text: str, time: float | None = None) -> list[StreamEvent]:
        """Queue a user query. Without `time` (live use) it is answered now, after the current frame; with `time`
        it is answered after the last frame at or before `time` (when a later frame arrives, or `flush()`)."""
        return self._push_query(0, text, time)

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
        self._queue_frames(0, frames, times, features)
        return self._drain()[0]

    def flush(self) -> list[StreamEvent]:
        """Answer the queries still queued (end of a recorded video); each answer is stamped at its query's time,
        never before it."""
        return self._replies(set(), {0: (math.inf, False)})[0]


class VideoLLMMoDBatchStreamSession(_StreamSessionBase):
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
        return self._push_query(stream, text, time)

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
                self._queue_frames(r, times=times[r], **{"frames" if frames is not None else "features": item})
        return self._drain()

    def flush(self) -> list[list[StreamEvent]]:
        """Answer every stream's queries still queued."""
        return self._replies(set(), {r: (math.inf, False) for r in range(len(self.streams))})


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
                session._push_query(r, text, time)
        key = "features" if frame_features[0] is not None else "frames"
        yield from session._run_sources(sources, key)


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


def _as_batch(item) -> torch.Tensor:
    """One frame (or one frame's features) as a batch of one."""
    return (item if isinstance(item, torch.Tensor) else torch.as_tensor(np.asarray(item)))[None]


__all__ = [
    "DEFAULT_THRESHOLD",
    "CacheBudget",
    "StreamContextLimitError",
    "StreamEvent",
    "StreamState",
    "VideoLLMMoDBatchStreamSession",
    "VideoLLMMoDStreamSession",
    "VideoLLMMoDStreamingMixin",
    "speaks",
]
