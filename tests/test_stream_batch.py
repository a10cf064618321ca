"""Several streams served by shared forwards: each stream's events, decisions and tokens equal those of the stream
run alone (dense and MoD, frame by frame and in automatic chunks, with queries, replies and a bounded cache), and
`stream_generate_batch` over several videos equals `stream_generate` over each."""

from collections import defaultdict

import pytest
from conftest import FAMILIES
from stream_helpers import (
    VARIANTS,
    assert_same_stream,
    features,
    half_seconds,
    make_model,
    random_video,
    write_video,
)

from modeling_videollm_mod import CacheBudget

LENGTHS = [14, 9, 12]  # streams of different lengths: the shorter ones become padding rows
QUERIES = [(2.2, "what is on the table?"), None, (0.0, "what is on the table?")]
BUDGETS = {"unbounded": None, "bounded": CacheBudget(max_tokens=90, keep_turns=1)}


@pytest.mark.parametrize(
    "name, chunk_size, budget, family",
    [("dense", 1, "unbounded", "llama"), ("mod", 1, "unbounded", "llama"), ("dense", "auto", "bounded", "llama"),
     ("mod", "auto", "bounded", "llama"), ("mod", "auto", "bounded", "qwen2"), ("mod", 1, "bounded", "mistral")],
)  # fmt: skip
def test_batched_streams_equal_each_stream_alone(processor, name, chunk_size, budget, family):
    """Other families with their sliding windows (24 tokens) and a bounded cache that re-indexes positions."""
    model = make_model(processor, **VARIANTS[name], **FAMILIES[family])
    settings = dict(threshold=0.5, max_new_tokens=3, chunk_size=chunk_size, budget=BUDGETS[budget])
    frames = [features(n, seed=10 + r) for r, n in enumerate(LENGTHS)]
    batch = model.batch_stream_session(processor, len(LENGTHS), **settings)
    for r, query in enumerate(QUERIES):
        if query is not None:
            batch.push_query(r, query[1], query[0])
    batch.push_frames(features=frames, times=[half_seconds(n) for n in LENGTHS])
    batch.flush()
    for r, query in enumerate(QUERIES):
        alone = model.stream_session(processor, **settings)
        if query is not None:
            alone.push_query(query[1], query[0])
        alone.push_frames(features=frames[r], times=half_seconds(LENGTHS[r]))
        alone.flush()
        assert sum(e.role == "assistant" for e in alone.events) >= 2
        assert_same_stream(batch.streams[r], alone)


def test_stream_generate_batch_over_videos_equals_stream_generate_over_each(processor, tmp_path):
    model = make_model(processor, None)
    paths = []
    for i, count in enumerate((16, 10)):
        paths.append(str(tmp_path / f"clip{i}.mp4"))
        write_video(paths[-1], random_video(count, seed=i), fps=8)
    queries = [[(0.5, "what is on the table?")], []]
    settings = dict(threshold=0.5, max_new_tokens=2)
    events = defaultdict(list)
    for index, event in model.stream_generate_batch(paths, processor, queries=queries, **settings):
        events[index].append(event)
    for index, path in enumerate(paths):
        alone = list(model.stream_generate(path, processor, queries=queries[index], **settings))
        assert any(e.role == "assistant" for e in alone)
        assert events[index] == alone


def test_batch_needs_frames_for_each_stream(processor):
    batch = make_model(processor, None).batch_stream_session(processor, 2)
    with pytest.raises(ValueError, match="each of the 2 streams"):
        batch.push_frames(features=[features(2)])
