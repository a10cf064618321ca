"""The streaming engine: sessions over one stream or a batch of independent streams (`streaming_videollm_mod` describes
the token flow, chunks, the bounded cache and the position policy). Every forward feeds the streams that have input,
the others are padding rows; decisions, replies, queries and budgets are per stream."""

import copy
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from transformers import GenerationConfig

from .budget_videollm_mod import FRAME, SINK, TURN, CacheBudget, CacheLedger
from .decoding_videollm_mod import TokenChooser
from .processing_videollm_mod import STREAM_CLOSE, STREAM_GENERATION_PROMPT, STREAM_OPEN, stream_frame_ids
from .stream_state_videollm_mod import MAX_CHUNK, ChunkSchedule, Reply, StreamEvent, StreamState

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


class StreamContextLimitError(RuntimeError):
    """The stream would use positions past the model's context (`max_position_embeddings`)."""


class StreamEngine:
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
        self.choose = TokenChooser(self.generation_config)
        self.record_logits = record_logits
        tokenizer = processor.tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.interval_id = processor.frame_token_interval_id
        self.frame_ids = [processor.video_token_id] * processor.frame_num_tokens
        self.open_ids = processor.encode_text(STREAM_OPEN)
        self.speak_ids = processor.encode_text(STREAM_GENERATION_PROMPT)
        self.max_positions = model.config.text_config.max_position_embeddings
        self.budget = CacheBudget.of(budget)
        self.ledger = CacheLedger.for_model(self.budget, model.config, model.dtype.itemsize)
        self.input_key: str | None = None  # "pixel_values_videos" or "frame_features", fixed by the first frames

        system = processor.system_prompt if system_prompt is None else system_prompt
        system_ids = processor.encode_text(processor.render([{"role": "system", "content": system}])[0])
        frame_cost = self.ledger.cost(len(self.frame_ids) + 1, 1)
        largest = min((limit // (4 * cost) for limit, cost in zip(self.limits, frame_cost, strict=True) if limit))
        self.streams = [StreamState(system_ids, chunk_size, min(MAX_CHUNK, largest)) for _ in range(num_streams)]
        self.cache = None

    # ------------------------------------------------------------------ budget
    @property
    def limits(self) -> tuple[int, int | None]:
        """(max tokens, max bytes) of a stream's cache."""
        return self.ledger.limits

    def describe_budget(self) -> str:
        """The cache budget of each stream in words, saying where it came from (for a command's summary)."""
        return self.ledger.describe()

    def held(self, stream: StreamState) -> tuple[int, int]:
        """(tokens, bytes) the stream holds in the cache."""
        return self.ledger.held(stream.segments)

    def _make_room(self, needs: dict[int, tuple[int, int]]) -> None:
        """Evict from each stream `r` what keeps `needs[r] = (tokens, frames)` new tokens from fitting its budget."""
        kept = {r: self.ledger.kept_after(self.streams[r].segments, *need) for r, need in needs.items()}
        kept = {r: segments for r, segments in kept.items() if segments is not None}
        if not kept:
            return
        position_map = self._position_map()
        for r, segments in kept.items():
            stream, row = self.streams[r], position_map[r]
            moves, next_position = self.ledger.relocate(segments)
            row.fill_(-1)
            for old, length, new in moves:
                row[old : old + length] = torch.arange(new, new + length)
            stream.keep(segments)
            if next_position is not None:
                stream.position = next_position
        reindex = self.budget.positions == "reindex"
        self.cache.remap_positions(
            position_map.to(self.model.device), self.model.model.rotate_cached_keys if reindex else None
        )

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

    def _frame_rows(self, plan: dict[int, int]):
        """The rows that feed `plan[r]` queued frames of stream `r`, and those frames in row order."""
        frame_len, rows, frames = len(self.frame_ids), {}, []
        for r in sorted(plan):
            stream, count = self.streams[r], plan[r]
            prefix = stream.pending + ([] if stream.stream_open else self.open_ids)
            ids = prefix + stream_frame_ids(count, self.frame_ids[0], len(self.frame_ids), self.interval_id)
            last = [len(prefix) + f * (frame_len + 1) + frame_len - 1 for f in range(count)]  # last placeholders
            # a frame's segment holds the `,` fed before it; after a turn or the sink, `\n[` stays with them
            first = 0 if stream.pending == [self.interval_id] else len(prefix)
            marks = [] if stream.segments else [(0, SINK, 0)]
            marks += [(first, FRAME, 1)] + [(len(prefix) + f * (frame_len + 1) - 1, FRAME, 1) for f in range(1, count)]
            rows[r] = (ids, last, marks)
            frames += [frame for _, frame in stream.queue[:count]]
        return rows, frames

    def _decide(self, plan: dict[int, int], rows: dict, logits: dict) -> None:
        """Act on the decisions after the `plan[r]` frames of stream r: each stream keeps its frames up to the first
        that speaks (the rest stay queued), then answers a query due by then, speaks, or stays silent."""
        cuts, speak = {}, []
        for r, count in plan.items():
            stream = self.streams[r]
            probs = torch.softmax(logits[r].float(), dim=-1)  # (count, V)
            p_interval = probs[:, self.interval_id].tolist()
            fires = speaks(probs, self.interval_id, self.threshold).tolist()
            used = next((f + 1 for f, fire in enumerate(fires) if fire), count)
            if used < count:  # later frames were computed past a frame that speaks: drop them from the cache
                ids, last, _ = rows[r]
                cuts[r] = stream.position - len(ids) + last[used - 1] + 1
            times = [t for t, _ in stream.queue[:used]]
            stream.decisions += list(zip(times, p_interval[:used], strict=True))
            stream.pending, stream.stream_open, stream.time = [], True, times[-1]
            stream.chunks.record(count, used, fires[used - 1])
            del stream.queue[:used]
            stream.answer_until = stream.time  # queries due by the last frame are answered next
            if stream.query_due(stream.time):
                continue  # the answer to the query replaces the decision
            if fires[used - 1]:
                speak.append(r)
            else:
                stream.pending = [self.interval_id]
        if cuts:  # before any reply makes room in the cache: the cut positions are those of this forward
            self._truncate(cuts)
        for r in speak:
            self._start_reply(r, self.speak_ids, 0, self.streams[r].time)

    # ------------------------------------------------------------------ teacher forcing
    def force(self, r: int, ids: list[int], frames: torch.Tensor | None = None, key: str | None = None):
        """Teacher forcing: feed `ids` into stream r as they are (a stretch of a ground-truth stream: text, `,` and
        frame placeholders), in one forward, taking no decision and generating nothing; `frames` are the inputs of its
        placeholders under `key` ("pixel_values_videos" or "frame_features"). What the stream had pending is dropped:
        the forced ids carry their own (a fresh stream's system prompt). Returns (len(ids), V) logits."""
        return self._force(r, ids, list(range(len(ids))), frames, key)

    def probe(self, r: int, frames: torch.Tensor, key: str) -> torch.Tensor:
        """The logits of the decision after each of `frames` fed after what stream r holds, each after `,`, as if
        nothing else came (VideoLLM-online's late-response probe); the stream is left as it was. Returns (T, V)."""
        stream = self.streams[r]
        position, pending, stream_open = stream.position, stream.pending, stream.stream_open
        ids = stream_frame_ids(len(frames), self.frame_ids[0], len(self.frame_ids), self.interval_id, True)
        step = len(ids) // len(frames)
        logits = self._force(r, ids, list(range(step - 1, len(ids), step)), frames, key)
        self._truncate({r: position})
        stream.pending, stream.stream_open = pending, stream_open
        return logits

    def complete(self, r: int, ids: list[int], frames: torch.Tensor | None = None, key: str | None = None):
        """Teacher-force `ids` (a prompt that ends with the generation prompt, `frames` as in `force`) and generate
        the reply that continues them, as `generate` would continue the sequence. Returns the reply's event."""
        if len(ids) > 1:
            self._force(r, ids[:-1], [len(ids) - 2], frames, key)
        self._start_reply(r, list(ids[-1:]), 0, self.streams[r].time)
        return self._run(feed=False)[r][-1]

    def _force(self, r: int, ids: list[int], offsets: list[int], frames, key) -> torch.Tensor:
        if frames is not None:
            if self.input_key not in (None, key):
                raise ValueError(f"a session takes raw frames or features, not both (it was fed {self.input_key})")
            self.input_key = key
        stream = self.streams[r]
        stream.pending = []
        video, interval = self.frame_ids[0], self.interval_id
        # segments for the budget: a frame (with the `,` before it) and each text run after a frame
        marks = [] if stream.segments else [(0, SINK, 0)]
        for i, token in enumerate(ids):
            before = ids[i - 1] if i else None
            if token == video and before != video:
                start = i - 1 if before == interval else i
                marks += [(start, FRAME, 1)] if not marks or start > marks[-1][0] else []
            elif before == video and token != interval:
                marks.append((i, TURN, 0))
        stream.stream_open = ids[-1] in (video, interval)
        return self._forward({r: (list(ids), offsets, marks)}, frames)[r]

    # ------------------------------------------------------------------ replies
    def _due(self, stream: StreamState) -> bool:
        """Whether the stream answers a query now: one due by `answer_until` (its last frame, the end of a video, now
        for a live query) or strictly before its next queued frame."""
        if stream.answer_until is not None and stream.query_due(stream.answer_until):
            return True
        stream.answer_until = None
        return bool(stream.queue) and stream.query_due(stream.queue[0][0], strict=True)

    def _start_answer(self, r: int, events: list[list[StreamEvent]]) -> None:
        """Start the answer to stream r's next query: an open stream is closed with `]`, a pending `,` (the silent
        decision) is discarded."""
        stream = self.streams[r]
        query_time, text = stream.queries.pop(0)
        events[r].append(StreamEvent(query_time, "user", text))
        stream.events.append(events[r][-1])
        query, _, _ = self.processor.render(
            [{"role": "user", "content": text}], add_generation_prompt=True, continuation=True
        )
        prefix = [] if stream.stream_open else stream.pending
        query_ids = self.processor.encode_text((STREAM_CLOSE if stream.stream_open else "") + query)
        self._start_reply(r, prefix + query_ids, len(prefix), max(stream.time, query_time))

    def _start_reply(self, r: int, ids: list[int], turn: int, time: float) -> None:
        """Stream r replies after `ids` (its turn starting at `turn`), at video time `time`; room is made for the
        longest reply first, so that nothing is evicted while it is generated."""
        self._make_room({r: (len(ids) + self.max_new_tokens, 0)})
        self._check_context({r: len(ids) + self.max_new_tokens})
        self.streams[r].reply = Reply(ids, turn, time)

    def _reply_rows(self) -> dict[int, tuple[list[int], list[int], list]]:
        rows = {}
        for r, stream in enumerate(self.streams):
            reply = stream.reply
            if reply is not None:
                marks = [] if reply.new else ([] if stream.segments else [(0, SINK, 0)]) + [(reply.turn, TURN, 0)]
                rows[r] = (reply.feed, [len(reply.feed) - 1], marks)
        return rows

    def _advance_replies(self, logits: dict[int, torch.Tensor], events: list[list[StreamEvent]]) -> None:
        """The next token of each reply; a reply ends at eos or `max_new_tokens` (its last token is not fed yet)."""
        order = sorted(logits)
        replies = [self.streams[r].reply for r in order]
        rows = torch.cat([logits[r][-1:] for r in order])
        tokens = self.choose(rows, [reply.prompt + reply.new for reply in replies])
        for r, reply, token, row in zip(order, replies, tokens, rows, strict=True):
            reply.new.append(token)
            if self.record_logits:
                reply.logits.append(row.float().cpu())
            reply.feed = [token]
            if token == self.eos_token_id or len(reply.new) == self.max_new_tokens:
                self._finish_reply(r, events)

    def _finish_reply(self, r: int, events: list[list[StreamEvent]]) -> None:
        stream, reply = self.streams[r], self.streams[r].reply
        new = reply.new
        stream.reply_positions.append(len(stream.transcript_ids) - len(new) + 1)
        if self.record_logits:
            stream.reply_logits.append(torch.stack(reply.logits))
        stream.pending = new[-1:] + ([] if new[-1] == self.eos_token_id else [self.eos_token_id])
        stream.stream_open, stream.reply = False, None
        text = self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()
        events[r].append(StreamEvent(reply.time, "assistant", text))
        stream.events.append(events[r][-1])

    # ------------------------------------------------------------------ the loop
    def _busy(self, feed: bool) -> bool:
        return any(s.reply is not None or self._due(s) or (feed and s.queue) for s in self.streams)

    def _step(self, feed: bool = True) -> list[list[StreamEvent]]:
        """One forward over every stream with something to do: a stream replying feeds its next token (or its prompt),
        another with a query due starts the answer, another with queued frames (with `feed`) feeds its next chunk, so
        that the streams that stay silent go on while others reply. Then each acts on its logits."""
        events = [[] for _ in self.streams]
        for r, stream in enumerate(self.streams):
            if stream.reply is None and self._due(stream):
                self._start_answer(r, events)
        rows = self._reply_rows()
        plan = {}
        for r, stream in enumerate(self.streams):
            if not feed or stream.reply is not None or not stream.queue:
                continue
            times = [t for t, _ in stream.queue]
            stop = min(len(times), stream.chunks.next_size())
            for j in range(stop):  # a chunk never runs past a frame after which a query is due
                if (j + 1 < len(times) and stream.query_due(times[j + 1], strict=True)) or stream.query_due(times[j]):
                    stop = j + 1
                    break
            plan[r] = stop
        if not rows and not plan:
            return events
        frame_rows, frames = self._frame_rows(plan)
        logits = self._forward(rows | frame_rows, torch.stack(frames) if frames else None)
        if rows:
            self._advance_replies({r: logits[r] for r in rows}, events)
        if plan:
            self._decide(plan, frame_rows, logits)
        self._compact()
        return events

    def _compact(self) -> None:
        """Drop the padding entries of the cache once they are a quarter of it (rows of different lengths pad the
        shorter ones, and a reply's one-token rows sit beside frames)."""
        valid = self.cache.layers[0].token_valid if self.cache is not None else None
        if valid is not None and valid.shape[1] > 64 and valid.shape[1] > 1.25 * int(valid.sum(-1).max()):
            self._truncate({})

    def _run(self, feed: bool) -> list[list[StreamEvent]]:
        events = [[] for _ in self.streams]
        while self._busy(feed):
            for r, new in enumerate(self._step(feed)):
                events[r] += new
        return events

    def run_queued(self) -> list[list[StreamEvent]]:
        """Feed every stream's queued frames (chunk by chunk, the streams together); what each stream said."""
        return self._run(feed=True)

    def enqueue_frames(self, r: int, frames=None, times: Iterable[float] | None = None, features=None) -> None:
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

    def enqueue_query(self, r: int, text: str, time: float | None) -> list[StreamEvent]:
        """Queue a query of stream r at video time `time` (answered after the frame at that time); at None, now:
        answered at once (returned)."""
        stream = self.streams[r]
        if time is not None and not (math.isfinite(time) and time >= 0):
            raise ValueError(f"query time {time!r} must be a time in the video, >= 0 seconds")
        if time is None:
            stream.queries.append((stream.time, text))
            stream.answer_until = stream.time
            return self._run(feed=False)[r]
        stream.queries.append((float(time), text))
        stream.queries.sort(key=lambda q: q[0])
        return []

    def run_sources(self, sources: Sequence[Iterator[tuple[float, object]]], key: str):
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
                        self.enqueue_frames(r, times=[item[0]], **{key: _as_batch(item[1])})
            if not self._busy(feed=True):
                break
            for r, events in enumerate(self._step()):
                yield from ((r, event) for event in events)
        for r, events in enumerate(self.answer_remaining()):
            yield from ((r, event) for event in events)

    def answer_remaining(self) -> list[list[StreamEvent]]:
        """Answer every stream's queries still queued (the end of a recorded video), each stamped at its query's time,
        never before it."""
        for stream in self.streams:
            stream.answer_until = math.inf
        return self._run(feed=False)


def _as_batch(item) -> torch.Tensor:
    """One frame (or one frame's features) as a batch of one."""
    return (item if isinstance(item, torch.Tensor) else torch.as_tensor(np.asarray(item)))[None]
