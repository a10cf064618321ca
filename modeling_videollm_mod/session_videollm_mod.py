"""The streaming engine: sessions over one stream or a batch of independent streams (`streaming_videollm_mod` describes
the token flow, chunks, the bounded cache and the position policy). Every forward feeds the streams that have input,
the others are padding rows; decisions, replies, queries and budgets are per stream."""

import copy
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from .budget_videollm_mod import FRAME, SINK, TURN, CacheBudget, CacheLedger
from .processing_videollm_mod import STREAM_CLOSE, STREAM_GENERATION_PROMPT, STREAM_OPEN, stream_frame_ids
from .stream_state_videollm_mod import MAX_CHUNK, ChunkSchedule, StreamEvent, StreamState

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


class _RowsDone(StoppingCriteria):
    """Rows of a batched reply that have nothing to say are done from the first token."""

    def __init__(self, done: torch.Tensor):
        super().__init__()
        self.done = done

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return self.done.to(input_ids.device)


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
        if not kept or self.cache is None:  # nothing fed yet, nothing to evict: the budget gives way to a first input
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

    def _feed_frames(self, plan: dict[int, int]) -> None:
        """Feed `plan[r]` queued frames of stream `r`, all streams in one forward; each stream keeps its frames up to
        the first that speaks (the rest stay queued)."""
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
        return self._generate({r: (list(ids[-1:]), 0, self.streams[r].time)})[r]

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

    def run_queued(self) -> list[list[StreamEvent]]:
        """Feed every stream's queued frames (chunk by chunk, the streams together); what each stream said."""
        events = [[] for _ in self.streams]
        while any(stream.queue for stream in self.streams):
            for r, new in enumerate(self._step()):
                events[r] += new
        return events

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
            return self._replies(set(), {r: (stream.time, False)})[r]
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
            if not any(stream.queue for stream in self.streams):
                break
            for r, events in enumerate(self._step()):
                yield from ((r, event) for event in events)
        for r, events in enumerate(self.answer_remaining()):
            yield from ((r, event) for event in events)

    def answer_remaining(self) -> list[list[StreamEvent]]:
        """Answer every stream's queries still queued (the end of a recorded video), each stamped at its query's time,
        never before it."""
        return self._replies(set(), {r: (math.inf, False) for r in range(len(self.streams))})


def _as_batch(item) -> torch.Tensor:
    """One frame (or one frame's features) as a batch of one."""
    return (item if isinstance(item, torch.Tensor) else torch.as_tensor(np.asarray(item)))[None]
