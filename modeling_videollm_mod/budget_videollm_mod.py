"""The bounded cache's ledger: what a stream's cache holds (its segments: the sink, frames and turns), what each costs
in tokens and bytes, which to evict before new tokens come, and where the kept ones move. It works on segments
alone, so the eviction policy is tested (and can be replaced) without a model; the session applies its decisions to
the cache (`streaming_videollm_mod` describes the policy).
"""

from dataclasses import dataclass

# Share of the budget an eviction frees beyond what the new tokens need: evictions come in blocks, not every frame.
EVICTION_SLACK = 0.125
POSITION_POLICIES = ("reindex", "original")
SINK, FRAME, TURN = "sink", "frame", "turn"


@dataclass
class CacheBudget:
    r"""
    How much of each stream a session keeps in its cache (see `streaming_videollm_mod` for the eviction rule).

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


class Segment:
    """A stretch of a stream's cache: the sink, one frame (with the `,` before it) or one turn; `length` tokens from
    position `start`, the stream's tokens `origin` to `origin + length` in the order fed (evicted ones counted, so
    that `origin` names a segment for the stream's life); `frames`: 1 for a frame."""

    __slots__ = ("kind", "start", "origin", "length", "frames")

    def __init__(self, kind: str, start: int, origin: int, frames: int, length: int = 0):
        self.kind, self.start, self.origin, self.length, self.frames = kind, start, origin, length, frames

    def __repr__(self) -> str:
        return f"Segment({self.kind}, start={self.start}, origin={self.origin}, length={self.length})"


class CacheLedger:
    """The account of one stream's cache under a `CacheBudget`: limits `(max_tokens, max_bytes)`, the bytes of keys
    and values of a text token and of a frame's placeholders over all layers (routed layers hold k of a frame's
    tokens), and `frame_tokens` placeholders per frame."""

    def __init__(
        self,
        budget: CacheBudget,
        max_tokens: int,
        token_bytes: int,
        frame_bytes: int,
        frame_tokens: int,
        origin: str = "as given",
    ):
        self.budget, self.limits = budget, (max_tokens, budget.max_bytes)
        self.token_bytes, self.frame_bytes, self.frame_tokens, self.origin = (
            token_bytes,
            frame_bytes,
            frame_tokens,
            origin,
        )

    @classmethod
    def for_model(cls, budget: CacheBudget, config, itemsize: int) -> "CacheLedger":
        """The ledger of a model's config (`itemsize`: bytes of one cached number); the default token budget is the
        trained stream length, else the context."""
        text = config.text_config
        max_positions = text.max_position_embeddings
        max_tokens, origin = budget.max_tokens, "as given"
        if max_tokens is None:
            max_tokens = min(config.trained_stream_length or max_positions, max_positions)
            origin = (
                "the stream length the model was trained on"
                if config.trained_stream_length is not None
                else "the model's context: it records no trained stream length"
            )
        if budget.positions == "reindex" and max_tokens > max_positions:
            raise ValueError(
                f"CacheBudget max_tokens={max_tokens} exceeds the model's context (max_position_embeddings="
                f"{max_positions}): re-indexed positions would run past it"
            )
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        per_layer = 2 * text.num_key_value_heads * head_dim * itemsize  # keys + values of one token in one layer
        routed = len(config.mod_layers)
        # a frame's placeholders: every one in a dense layer, k of them in a routed layer
        frame = (text.num_hidden_layers - routed) * config.frame_num_tokens + routed * config.mod_keep_per_frame
        return cls(budget, max_tokens, per_layer * text.num_hidden_layers, per_layer * frame, config.frame_num_tokens,
                   origin)  # fmt: skip

    def describe(self) -> str:
        """The budget in words, saying where it came from (for a command's summary)."""
        tokens, max_bytes = self.limits
        described = f"{tokens} tokens ({self.origin})"
        return described + (f" and {max_bytes / 2**20:.1f} MiB" if max_bytes is not None else "")

    def cost(self, tokens: int, frames: int) -> tuple[int, int]:
        """(tokens, bytes) in the cache of `tokens` tokens of which `frames` frames' placeholders."""
        text_tokens = tokens - frames * self.frame_tokens
        return tokens, text_tokens * self.token_bytes + frames * self.frame_bytes

    def held(self, segments: list[Segment]) -> tuple[int, int]:
        """(tokens, bytes) that `segments` hold."""
        costs = [self.cost(s.length, s.frames) for s in segments]
        return sum(c[0] for c in costs), sum(c[1] for c in costs)

    def fits(self, cost: tuple[int, int], scale: float = 1.0) -> bool:
        return all(limit is None or value <= limit * scale for value, limit in zip(cost, self.limits, strict=True))

    def kept_after(self, segments: list[Segment], tokens: int, frames: int) -> list[Segment] | None:
        """The segments to keep so that `tokens` new tokens (`frames` frames of them) fit, or None when all fit.

        Oldest first, frames and older turns go until the stream and the new tokens fit in `1 - EVICTION_SLACK` of
        the budget, then the last `keep_turns` turns if still needed; never the sink, nor the last segment (the frame
        or turn that the new tokens may extend). Raises ValueError when even that cannot make room."""
        costs = [self.cost(s.length, s.frames) for s in segments]
        need = self.cost(tokens, frames)
        total = [sum(c[i] for c in costs) + need[i] for i in range(2)]
        if self.fits(total):
            return None
        turns = [i for i, s in enumerate(segments) if s.kind == TURN]
        keep_turns = self.budget.keep_turns
        kept_turns = set(turns[len(turns) - keep_turns :]) if keep_turns else set()
        evictable = range(1, len(costs) - 1)
        order = [i for i in evictable if i not in kept_turns] + [i for i in evictable if i in kept_turns]
        dropped = set()
        for i in order:
            if self.fits(total, 1 - EVICTION_SLACK) or (i in kept_turns and self.fits(total)):
                break
            dropped.add(i)
            total = [total[j] - costs[i][j] for j in range(2)]
        over = [limit is not None and value > limit for value, limit in zip(total, self.limits, strict=True)]
        # The default token budget (the trained length) gives way when the sink and the new tokens alone exceed it
        # (a long query to a model trained on short streams): the cache then holds just those.
        if over[1] or (over[0] and self.budget.max_tokens is not None):
            raise ValueError(
                f"the cache budget {self.budget} cannot hold the stream's sink and {tokens} new tokens "
                f"({tuple(total)} > {self.limits}); raise it or lower max_new_tokens"
            )
        return [s for i, s in enumerate(segments) if i not in dropped]

    def relocate(self, kept: list[Segment]) -> tuple[list[tuple[int, int, int]], int | None]:
        """Where the kept segments move: `(old start, length, new start)` each, in order, and the stream's next
        position (None: unchanged). Under `"reindex"` they close up from 0; under `"original"` they stay. Updates each
        segment's `start`."""
        reindex = self.budget.positions == "reindex"
        moves, start = [], 0
        for segment in kept:
            new = start if reindex else segment.start
            moves.append((segment.start, segment.length, new))
            segment.start, start = new, new + segment.length
        return moves, (start if reindex else None)
