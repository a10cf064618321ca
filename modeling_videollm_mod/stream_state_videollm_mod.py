"""What a streaming session keeps of each stream (`StreamState`: queued frames and queries, what was fed, decided and
said, the segments its cache holds) and how many frames its next forward takes (`ChunkSchedule`)."""

from typing import NamedTuple

import torch

from .budget_videollm_mod import Segment

# Largest automatic chunk: on the CPU benchmark the per-frame cost still falls up to ~128 frames (1,408 tokens) per
# forward, as each forward's fixed cost (reading the weights) is shared by more frames (benchmarks/README.md).
MAX_CHUNK = 128


class StreamEvent(NamedTuple):
    """Something said in a stream: `time` in seconds (video time), `role` `"user"` or `"assistant"`, `text`."""

    time: float
    role: str
    text: str


class ChunkSchedule:
    """Frames per forward of a stream: a fixed number, or `"auto"` (see `streaming_videollm_mod`)."""

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
        decision was taken); transcript_ids (`list[int]`: the tokens fed that the cache holds, in order: every token
        fed until the first eviction, then the segments kept, so that it stays as bounded as the cache); pending
        (`list[int]`: tokens to feed before the next input); reply_logits (`list[torch.Tensor]`: with
        `record_logits`, per reply still held, (n, V) logits of the generated tokens); reply_positions (`list[int]`:
        per reply still held, the index in `transcript_ids` of its first generated token); segments
        (`list[Segment]`: what the cache holds of the stream, in order); time (video time of the last frame fed);
        position (the next token's position).
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
        self.fed = 0  # tokens fed (evicted ones included): each segment's `origin` counts from the first
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
                self.segments.append(Segment(kind, self.position + offset, self.fed + offset, frames))
        self.transcript_ids += ids
        self.position += len(ids)
        self.fed += len(ids)

    def keep(self, segments: list[Segment]) -> None:
        """After an eviction: hold only `segments` (a subset of `self.segments`, in order) and their tokens in
        `transcript_ids`, with the replies that lie in them."""
        held = {id(segment) for segment in segments}
        ids, moved = [], []  # per held segment: (old index in the transcript, length, new index)
        for segment, start in self.spans():
            if id(segment) in held:
                moved.append((start, segment.length, len(ids)))
                ids += self.transcript_ids[start : start + segment.length]
        replies = []
        for i, position in enumerate(self.reply_positions):
            new = next((n + position - o for o, length, n in moved if o <= position < o + length), None)
            if new is not None:
                replies.append((new, self.reply_logits[i] if self.reply_logits else None))
        self.reply_positions = [position for position, _ in replies]
        if self.reply_logits:
            self.reply_logits = [logits for _, logits in replies]
        self.segments, self.transcript_ids = segments, ids

    def spans(self):
        """`(segment, index of its first token in transcript_ids)` of each segment held, in order."""
        start = 0
        for segment in self.segments:
            yield segment, start
            start += segment.length

    def segment_ids(self, segment: Segment) -> list[int]:
        """The tokens of `segment`, one of `segments`."""
        for held, start in self.spans():
            if held is segment:
                return self.transcript_ids[start : start + segment.length]
        raise ValueError(f"{segment} is not held by the stream")

    def truncate(self, position: int) -> None:
        """Forget what was fed from `position` on (a chunk cut at the frame that speaks)."""
        dropped = self.position - position
        del self.transcript_ids[len(self.transcript_ids) - dropped :]
        self.fed -= dropped
        self.segments = [s for s in self.segments if s.start < position]
        last = self.segments[-1]
        last.length = min(last.length, position - last.start)
        self.position = position
