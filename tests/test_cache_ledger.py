"""The bounded cache's ledger on segments alone, no model: costs, which segments an eviction keeps (oldest first, down
to the slack, the sink, the last segment and the last turns spared), where the kept ones move, and when it cannot."""

import pytest

from modeling_videollm_mod.budget_videollm_mod import FRAME, SINK, TURN, CacheBudget, CacheLedger, Segment
from videollm_mod.presets import tiny_config


def stream(*kinds_and_lengths) -> list[Segment]:
    """Consecutive segments: ("sink", 5), ("frame", 11), ("turn", 8), ..."""
    segments, start = [], 0
    for kind, length in kinds_and_lengths:
        segments.append(Segment(kind, start, start, int(kind == FRAME), length))
        start += length
    return segments


def ledger(max_tokens=100, **budget) -> CacheLedger:
    # a frame: 11 tokens (the `,` and 10 placeholders); every token costs 1 byte, a frame's placeholders 4 bytes
    return CacheLedger(CacheBudget(max_tokens=max_tokens, **budget), max_tokens, 1, 4, 10)


def test_a_frame_costs_its_routed_subset_in_bytes():
    config = tiny_config(mod_layers=[1, 3])  # 4 layers, 2 routed keep k = 2 of 10; 2 kv heads of 8, float32
    book = CacheLedger.for_model(CacheBudget(max_tokens=64), config, itemsize=4)
    per_layer = 2 * 2 * 8 * 4  # keys and values of one token in one layer
    assert book.token_bytes == 4 * per_layer
    assert book.frame_bytes == (2 * 10 + 2 * 2) * per_layer
    assert book.cost(11, 1) == (11, book.token_bytes + book.frame_bytes)  # the `,` and the frame
    assert book.limits == (64, None) and book.describe() == "64 tokens (as given)"


def test_nothing_is_evicted_while_the_new_tokens_fit():
    segments = stream((SINK, 5), (FRAME, 11), (FRAME, 11))
    assert ledger().kept_after(segments, 11, 1) is None  # 27 + 11 <= 100


def test_the_oldest_frames_go_first_down_to_the_slack_never_the_sink_or_the_last_segment():
    segments = stream((SINK, 5), *[(FRAME, 11)] * 8)  # 93 tokens
    kept = ledger().kept_after(segments, 11, 1)  # 104 > 100: free down to 87.5
    assert [s.kind for s in kept] == [SINK] + [FRAME] * 6  # the two oldest frames went: 104 - 22 = 82
    assert kept[0] is segments[0] and kept[-1] is segments[-1]


def test_the_last_turns_stay_while_frames_can_go():
    segments = stream((SINK, 5), (TURN, 8), (FRAME, 11), (TURN, 8), (FRAME, 11), (FRAME, 11), (TURN, 8), (FRAME, 11))
    kept = ledger(max_tokens=80, keep_turns=2).kept_after(segments, 11, 1)  # 73 + 11 > 80: free down to 70
    assert [s.kind for s in kept] == [SINK, TURN, FRAME, FRAME, TURN, FRAME]  # first turn and first frame went
    assert kept[1] is segments[3]


def test_positions_close_up_when_reindexed_and_stay_otherwise():
    segments = stream((SINK, 5), (FRAME, 11), (FRAME, 11), (FRAME, 11))
    kept = [segments[0], segments[2], segments[3]]
    moves, position = ledger().relocate(kept)
    assert moves == [(0, 5, 0), (16, 11, 5), (27, 11, 16)] and position == 27
    assert [s.start for s in kept] == [0, 5, 16]
    segments = stream((SINK, 5), (FRAME, 11), (FRAME, 11))
    moves, position = ledger(positions="original").relocate([segments[0], segments[2]])
    assert moves == [(0, 5, 0), (16, 11, 16)] and position is None


def test_a_budget_that_cannot_hold_the_sink_and_the_new_tokens_says_so():
    segments = stream((SINK, 40), (FRAME, 11))
    with pytest.raises(ValueError, match="cannot hold the stream's sink and 70 new tokens"):
        ledger(max_tokens=100).kept_after(segments, 70, 0)


@pytest.mark.parametrize("max_tokens", [None, 5000])
def test_a_reindexed_budget_past_the_context_is_refused(max_tokens):
    config = tiny_config()  # context 4096
    if max_tokens is None:
        assert CacheLedger.for_model(CacheBudget(), config, 4).limits == (4096, None)
    else:
        with pytest.raises(ValueError, match="max_tokens=5000 exceeds the model's context"):
            CacheLedger.for_model(CacheBudget(max_tokens=max_tokens), config, 4)
