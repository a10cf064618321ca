"""Bounded streams: the cache never exceeds its budget (tokens or bytes) and holds exactly the sink, the last turns and
the most recent frames and turns, whole frames in every layer; a byte budget holds more frames with MoD; a stream
far longer than its budget runs in a bounded cache."""

import pytest
import torch
from stream_helpers import VARIANTS, features, half_seconds, make_model, silent_model

from modeling_videollm_mod import CacheBudget
from modeling_videollm_mod.budget_videollm_mod import FRAME, SINK, TURN


def check_bounded(session, budget: CacheBudget, history: dict) -> None:
    """The invariants of a bounded stream after a push; `history` collects every segment seen, by origin."""
    stream = session.streams[0]
    segments = stream.segments
    for segment in segments:
        history[segment.origin] = segment.kind

    tokens, held_bytes = session.held(stream)
    assert budget.max_tokens is None or tokens <= budget.max_tokens
    assert budget.max_bytes is None or held_bytes <= budget.max_bytes
    assert int(session.cache.valid_bytes()[0]) == held_bytes  # the arithmetic is exact

    # re-indexed: the segments lie end to end from position 0, and each layer holds exactly their positions
    starts = [s.start for s in segments]
    assert starts == [sum(s.length for s in segments[:i]) for i in range(len(segments))]
    assert stream.position == tokens
    config = session.model.config
    for i, layer in enumerate(session.cache.layers):
        held = layer.token_position[layer.token_valid].tolist()
        assert held == sorted(held) and (not held or held[-1] < tokens)
        per_segment = [sum(s.start <= p < s.start + s.length for p in held) for s in segments]
        dropped = config.frame_num_tokens - config.mod_keep_per_frame if i in config.mod_layers else 0
        assert per_segment == [s.length - s.frames * dropped for s in segments]  # whole frames: k of them if routed

    # the sink, the last turns, and the recent window: everything evicted is older than every frame kept
    assert segments[0].kind == SINK and segments[0].origin == 0
    turns = [origin for origin, kind in sorted(history.items()) if kind == TURN]
    kept = {s.origin for s in segments}
    assert set(turns[len(turns) - budget.keep_turns :]) <= kept
    evicted = set(history) - kept
    window = [s.origin for s in segments if s.kind == FRAME]
    assert window and (not evicted or max(evicted) < window[0])


@pytest.mark.parametrize("name, unit", [("dense", "tokens"), ("mod", "bytes")])
def test_bounded_cache_holds_the_sink_the_last_turns_and_the_recent_window(processor, name, unit):
    model = make_model(processor, **VARIANTS[name])
    budget = (
        CacheBudget(max_tokens=150, keep_turns=2) if unit == "tokens" else CacheBudget(max_bytes=80_000, keep_turns=2)
    )
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=3, budget=budget)
    history = {}
    frames = features(45)
    for i, time in enumerate(half_seconds(45)):
        session.push_frame(features=frames[i], time=time)
        if i == 20:
            session.push_query("what is on the table?")
        check_bounded(session, budget, history)
    assert sum(kind == TURN for kind in history.values()) > 2  # turns came and went
    assert len(history) > 2 * len(session.streams[0].segments)  # so did frames


def test_byte_budget_holds_more_frames_with_mod(processor):
    frames_held = {}
    for name, variant in VARIANTS.items():
        model = silent_model(processor, variant["mod_layers"])
        session = model.stream_session(
            processor, threshold=0.0, chunk_size="auto", budget=CacheBudget(max_bytes=64_000)
        )
        session.push_frames(features=features(100), times=half_seconds(100))
        frames_held[name] = sum(s.frames for s in session.streams[0].segments)
    # a frame costs 11 tokens in all 4 layers (dense) vs 11 in 2 layers + 3 (k = 2 and `,`) in 2 routed layers
    assert frames_held["mod"] / frames_held["dense"] >= 44 / 28 * (1 - 0.05)


def test_stream_far_longer_than_its_budget_runs_in_a_bounded_cache(processor):
    model = silent_model(processor)
    budget = CacheBudget(max_tokens=400)
    session = model.stream_session(processor, threshold=0.0, chunk_size="auto", budget=budget)
    lengths = []
    for start in range(0, 600, 200):  # 600 frames (300 s at 2 fps): 6,600 tokens through a 400-token cache
        session.push_frames(features=features(200, seed=start), times=[(start + i) / 2 for i in range(200)])
        lengths.append([layer.keys.shape[-2] for layer in session.cache.layers])
    assert len(session.decisions) == 600
    assert max(max(row) for row in lengths) <= 400
    assert session.cache.get_seq_length() <= 400


def test_eviction_keeps_reindexed_keys_of_the_kept_tokens(processor):
    """After evictions, the first layer's keys (a function of each token and its position only) equal those of a
    fresh forward over the kept tokens at consecutive positions."""
    model = silent_model(processor)
    frames = features(30)
    session = model.stream_session(processor, threshold=0.0, budget=CacheBudget(max_tokens=120))
    session.push_frames(features=frames, times=half_seconds(30))
    stream = session.streams[0]
    kept_ids = [i for s in stream.segments for i in stream.segment_ids(s)]
    assert kept_ids == stream.transcript_ids  # the transcript holds what the cache holds, as bounded
    kept_frames = frames[-sum(s.frames for s in stream.segments) :]
    with torch.no_grad():
        fresh = model(input_ids=torch.tensor([kept_ids]), frame_features=kept_frames, use_cache=True).cache
    assert sum(s.frames for s in stream.segments) < 30 / 2  # most frames were evicted
    assert (session.cache.layers[0].keys - fresh.layers[0].keys).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "given, expected",
    [(None, CacheBudget()), (256, CacheBudget(max_tokens=256)), ({"max_bytes": 2**20}, CacheBudget(max_bytes=2**20))],
)
def test_session_takes_a_budget_as_tokens_or_fields(processor, given, expected):
    session = silent_model(processor).stream_session(processor, budget=given)
    assert session.budget == expected


def test_default_budget_is_the_trained_stream_length_else_the_context(processor):
    model = make_model(processor)
    assert model.stream_session(processor).limits == (4096, None)
    assert "the model's context" in model.stream_session(processor).describe_budget()
    model.config.trained_stream_length = 300
    session = model.stream_session(processor)
    assert session.limits == (300, None)
    assert session.describe_budget() == "300 tokens (the stream length the model was trained on)"
    assert model.stream_session(processor, budget=120).describe_budget() == "120 tokens (as given)"
    session.push_frames(features=features(60), times=half_seconds(60))  # 660 tokens of frames: evictions
    assert session.num_tokens > 600 and sum(s.length for s in session.streams[0].segments) <= 300


def test_transcript_holds_what_the_cache_holds_and_the_kept_replies_point_at_their_tokens(processor):
    """Memory stays flat: after evictions the transcript is the held segments' tokens (not every token fed), and the
    replies still held keep their logits, whose argmax (greedy) are the tokens at their positions."""
    model = make_model(processor)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=3, record_logits=True, budget=150)
    session.push_frames(features=features(80), times=half_seconds(80))
    stream = session.streams[0]
    spoken = sum(e.role == "assistant" for e in session.events)
    assert session.num_tokens > 4 * 150 and len(stream.transcript_ids) == sum(s.length for s in stream.segments) <= 150
    assert 0 < len(stream.reply_positions) < spoken  # early replies were evicted with their tokens
    assert len(stream.reply_logits) == len(stream.reply_positions)
    fed = stream.transcript_ids + stream.pending  # a reply's last token is fed with the next input
    for start, logits in zip(stream.reply_positions, stream.reply_logits, strict=True):
        assert fed[start : start + logits.shape[0]] == logits.argmax(-1).tolist()


def test_the_default_budget_gives_way_to_a_query_longer_than_the_trained_length(processor):
    model = make_model(processor)
    query = "what is on the table? " * 20
    model.config.trained_stream_length = 60  # less than the sink, the query and a reply
    session = model.stream_session(processor, threshold=0.0, max_new_tokens=4)
    session.push_query(query, time=0.0)
    session.push_frames(features=features(3), times=half_seconds(3))
    session.flush()
    roles = [e.role for e in session.events]
    assert roles[roles.index("user") + 1] == "assistant"  # the query was answered
    given = model.stream_session(processor, threshold=0.0, max_new_tokens=4, budget=60)  # a user's budget holds
    given.push_query(query, time=0.0)
    with pytest.raises(ValueError, match="cannot hold the stream's sink"):
        given.push_frames(features=features(3), times=half_seconds(3))


def test_the_default_budget_gives_way_to_a_first_chunk_of_frames_longer_than_the_trained_length(processor):
    """A stream with no query whose first chunk of frames alone exceeds the trained length (a model trained mostly on
    short clips) is fed, not stopped: there is nothing in the cache yet to evict."""
    model = silent_model(processor)
    model.config.trained_stream_length = 30
    session = model.stream_session(processor, chunk_size=8)  # 8 frames of 11 tokens at once
    session.push_frames(features=features(20), times=half_seconds(20))
    session.flush()
    stream = session.streams[0]
    assert stream.time == 9.5 and session.num_tokens > 20 * 11  # every frame fed
    held = sum(s.length for s in stream.segments)
    assert stream.segments[0].kind == "sink" and held <= stream.segments[0].length + 8 * 11  # the sink and a chunk


def test_generate_continues_a_streams_cache_after_evictions_as_the_session_would(processor):
    """`generate(cache=session.cache)` picks up a stream where it is, its cache re-indexed by evictions: the answer to
    a query equals the session's own answer, logit for logit (the query fits the budget: generate does not evict)."""
    model = make_model(processor)
    frames = features(60)

    def streamed():
        session = model.stream_session(processor, threshold=0.5, max_new_tokens=5, record_logits=True, budget=400)
        session.push_frames(features=frames, times=half_seconds(60))
        return session

    asked, continued = streamed(), streamed()
    fed = continued.streams[0].transcript_ids + continued.streams[0].pending
    assert continued.num_tokens > 600 and continued.cache.get_seq_length() < 400  # evicted, re-indexed
    asked.push_query("what now?")
    stream = asked.streams[0]
    prompt = (stream.transcript_ids + stream.pending)[: stream.reply_positions[-1]]
    assert prompt[: len(fed)] == fed  # the query evicted nothing: both caches held the same before it
    out = model.generate(input_ids=torch.tensor([prompt]), cache=continued.cache, do_sample=False,
                         max_new_tokens=stream.reply_logits[-1].shape[0], return_dict_in_generate=True,
                         output_logits=True)  # fmt: skip
    logits = torch.stack([step[0] for step in out.logits])
    assert (logits - stream.reply_logits[-1]).abs().max() <= 1e-5


@pytest.mark.parametrize("chunk_size", [5, "auto"])
def test_a_reply_after_a_cut_chunk_evicts_from_the_cut_stream(processor, chunk_size):
    """A chunk cut at the frame that speaks is dropped before the reply makes room for itself: the cache, the
    segments and the transcript hold the same tokens after every push."""
    model = make_model(processor)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=3, chunk_size=chunk_size,
                                   budget=CacheBudget(max_tokens=90, keep_turns=1))  # fmt: skip
    frames = features(40)
    for start in range(0, 40, 10):
        session.push_frames(features=frames[start : start + 10], times=half_seconds(40)[start : start + 10])
        stream, dense = session.streams[0], session.cache.layers[0]  # layer 0 is dense: it caches every token
        held = sum(segment.length for segment in stream.segments)
        assert held == len(stream.transcript_ids) == int(dense.token_valid.sum()) == stream.position
        runs = "".join("v" if t == processor.video_token_id else " " for t in stream.transcript_ids).split()
        assert set(map(len, runs)) == {processor.frame_num_tokens}  # whole frames only: no chunk cut elsewhere
        assert len(runs) == sum(segment.frames for segment in stream.segments)
    assert sum(e.role == "assistant" for e in session.events) >= 3 and stream.fed > 90  # it spoke, and evicted
