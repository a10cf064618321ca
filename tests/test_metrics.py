"""Streaming and COIN metrics on small hand-computed cases."""

import math

import pytest
import torch

from modeling_videollm_mod import speaks
from videollm_mod.recipes.metrics import (
    StreamMetrics,
    aggregate_stream_metrics,
    coin_accuracy,
    coin_procedure_accuracy,
    early_frame_diff,
    fluency,
    forced_stream_metrics,
    fuzzy_match,
    late_frame_diff,
    levenshtein,
    lm_turn_metrics,
    model_fire_policy,
    periodic_fires,
    stream_evaluate,
)

INTERVAL, RESPONSE, VIDEO, EOS, V = 11, 12, 10, 2, 32


def test_threshold_zero_is_the_argmax_rule():
    probs = torch.tensor([[0.1, 0.9], [0.6, 0.4], [0.45, 0.55]])  # interval = column 1
    assert speaks(probs, interval_id=1, threshold=0.0).tolist() == [False, True, False]


def test_a_frame_speaks_when_interval_probability_is_below_threshold():
    probs = torch.tensor([[0.1, 0.9], [0.6, 0.4], [0.45, 0.55]])
    assert speaks(probs, interval_id=1, threshold=0.725).tolist() == [False, True, True]


def test_a_low_threshold_still_speaks_when_another_token_wins():
    """VideoLLM-online's rule: below the threshold P(interval) is zeroed, then the argmax decides; so a threshold
    under 0.5 never silences a frame whose argmax is not the interval token."""
    probs = torch.tensor([[0.35, 0.4, 0.25], [0.2, 0.3, 0.5]])  # interval = column 2
    assert speaks(probs, interval_id=2, threshold=0.2).tolist() == [True, False]  # row 0: P 0.25 >= 0.2, argmax 1
    assert speaks(probs, interval_id=2, threshold=0.55).tolist() == [True, True]


@pytest.mark.parametrize(
    ("fires", "expected"),
    [([0, 0, 1], 0), ([0, 1, 1], 1), ([1, 0, 0], 2), ([0, 0, 0], None)],
    ids=["on_time", "early_by_1", "early_by_2", "late"],
)
def test_early_frame_diff_counts_frames_before_the_reply_frame(fires, expected):
    assert early_frame_diff(torch.tensor(fires, dtype=torch.bool)) == expected


@pytest.mark.parametrize(("fires", "expected"), [([1, 0], -1), ([0, 0, 1], -3), ([0, 0], -2)])
def test_late_frame_diff_is_minus_the_first_firing_probe_or_all_probes(fires, expected):
    assert late_frame_diff(torch.tensor(fires, dtype=torch.bool)) == expected


def test_lm_turn_metrics_uniform_logits_give_vocabulary_perplexity():
    ppl, _ = lm_turn_metrics(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    assert ppl == pytest.approx(4.0)


def test_lm_turn_metrics_counts_correct_tokens_before_the_first_error():
    logits = torch.eye(5)[[1, 2, 0, 4]] * 5  # argmax 1, 2, 0, 4
    _, prefix = lm_turn_metrics(logits, torch.tensor([1, 2, 3, 4]))
    assert prefix == 2


@pytest.mark.parametrize(
    ("frame_diff", "expected"),
    [(0, (3 + 2) / 8), (1, (3 - 1) / 8), (-2, (3 - 1) / 8)],
    ids=["on_time", "early", "late"],
)
def test_fluency_by_timing(frame_diff, expected):
    assert fluency(frame_diff, num_stream=3, num_lm=5, lm_correct_prefix=2) == pytest.approx(expected)


def test_levenshtein_distance():
    assert levenshtein("kitten", "sitting") == 3


def test_fuzzy_match_picks_the_nearest_category():
    assert fuzzy_match("place a red circel", ["place a red circle", "paint the circle blue"]) == "place a red circle"


def test_coin_accuracy_lowercases_strips_period_and_fuzzy_matches():
    categories = ["place a red circle", "paint the circle blue", "remove the circle"]
    predictions = ["Place a red circle.", "paint the circl blue", "remove the circle"]
    labels = ["place a red circle", "paint the circle blue", "place a red circle"]
    assert coin_accuracy(predictions, labels, categories) == pytest.approx(2 / 3)


def test_coin_procedure_accuracy_scores_zipped_steps_after_the_number_prefix():
    categories = ["place a red circle", "paint the circle blue", "remove the circle"]
    predictions = ["1. paint the circle blue\n2. remove the circle\n3. extra line", "1. Remove the circle."]
    labels = [["paint the circle blue", "place a red circle"], ["remove the circle"]]
    # sample 1: right, wrong (the third line has no label and is not counted); sample 2: fuzzy right -> 2 / 3
    assert coin_procedure_accuracy(predictions, labels, categories) == pytest.approx(2 / 3)


def test_aggregate_converts_frame_diff_to_seconds():
    samples = [StreamMetrics(2.0, 1.0, 0.5, 0.5, 1), StreamMetrics(4.0, 3.0, 1.0, 1.0, 1)]
    assert aggregate_stream_metrics(samples, fps=2) == {
        "lm_ppl": 3.0,
        "time_diff": 1.0,
        "fluency": 0.75,
        "lm_correctness": 0.75,
    }


# ----------------------------------------------------------------------------------------------------------------
# the streaming metrics on a scripted stream: three turns (on time, late, early), frames of 2 placeholders

# turn 1: bos sys [ v v , v v ]\n A : x eos    (positions 0-12)
# turn 2: [ v v , v v , v v ]\n A : y eos      (13-26)
# turn 3: [ v v , v v ]\n A : z eos            (27-37)
IDS = [1, 20, 21, 10, 10, 11, 10, 10, 12, 22, 23, 24, 2]
IDS += [21, 10, 10, 11, 10, 10, 11, 10, 10, 12, 22, 23, 25, 2]
IDS += [21, 10, 10, 11, 10, 10, 12, 22, 23, 26, 2]
LEARNED = {5, 8, 9, 10, 11, 12, 16, 19, 22, 23, 24, 25, 26, 30, 33, 34, 35, 36, 37}
# what the scripted model predicts at each position (argmax); the rest predicts token 0
PREDICT = {4: INTERVAL, 7: RESPONSE, 8: 22, 9: 23, 10: 0, 11: EOS}  # on time, text wrong at the 3rd token
PREDICT |= {15: INTERVAL, 18: INTERVAL, 21: INTERVAL, 22: 22, 23: 23, 24: 25, 25: EOS}  # never fires: late
PREDICT |= {29: RESPONSE, 32: RESPONSE, 33: 22, 34: 23, 35: 26, 36: EOS}  # fires one frame early


class ScriptedStream:
    """A `ForcedStream` that returns logits of +4 on the scripted token; a probe fires at its second frame. It records
    how far it was fed when each stretch of logits and each probe was asked for."""

    ids = torch.tensor(IDS)
    video_id, frame_tokens, eos_ids = VIDEO, 2, {EOS}

    def __init__(self):
        self.calls = []
        self.fed = 0

    def logits(self, stop):
        self.fed = max(self.fed, stop)
        self.calls.append(("logits", stop))
        logits = torch.zeros(stop, V)
        for pos in range(stop):
            logits[pos, PREDICT.get(pos, 0)] = 4.0
        return logits

    def probe(self, cut, first, num):
        self.calls.append(("probe", cut, first, num, self.fed))
        logits = torch.zeros(num, V)
        logits[:, INTERVAL] = 4.0
        logits[1, INTERVAL], logits[1, RESPONSE] = 0.0, 4.0  # the 2nd probed frame fires
        return logits


LABELS = torch.tensor([[t if i in LEARNED else -100 for i, t in enumerate(IDS)]])


def run_scripted(threshold=0.0):
    stream = ScriptedStream()
    return stream, forced_stream_metrics(stream, LABELS, model_fire_policy(INTERVAL, threshold))


def text_ppl(num_right_tokens_of_4):
    """Per-turn PPL of 4 text targets when the model puts +4 on `num_right_tokens_of_4` of them."""
    right = -math.log(math.exp(4) / (math.exp(4) + V - 1))
    wrong = -math.log(1 / (math.exp(4) + V - 1))
    return math.exp((num_right_tokens_of_4 * right + (4 - num_right_tokens_of_4) * wrong) / 4)


def test_stream_evaluate_frame_diff_on_time_late_probe_and_early():
    _, metrics = run_scripted()
    assert metrics.frame_diff == pytest.approx((0 + 2 + 1) / 3)


def test_stream_evaluate_late_probe_is_after_the_last_frame_and_takes_the_next_frames():
    stream, _ = run_scripted()
    # turn 2's last decision is at position 21; frames 0-1 (turn 1) and 2-4 (turn 2) came before; probe 2 frames,
    # with the stream fed up to the cut, not beyond
    assert [call for call in stream.calls if call[0] == "probe"] == [("probe", 22, 5, 2, 22)]


def test_stream_evaluate_feeds_the_stream_in_order_turn_by_turn():
    stream, _ = run_scripted()
    # per turn: up to its last decision (the cut), then up to its eos
    assert stream.calls == [("logits", 8), ("logits", 13), ("logits", 22), ("probe", 22, 5, 2, 22), ("logits", 27),
                            ("logits", 33), ("logits", 38)]  # fmt: skip


def test_stream_evaluate_fluency_per_timing():
    _, metrics = run_scripted()
    assert metrics.fluency == pytest.approx(((2 + 2) / 6 + (3 - 1) / 7 + (2 - 1) / 6) / 3)


def test_stream_evaluate_lm_correctness_and_ppl():
    _, metrics = run_scripted()
    assert metrics.lm_correctness == pytest.approx((2 / 4 + 1 + 1) / 3)
    assert metrics.lm_ppl == pytest.approx((text_ppl(3) + text_ppl(4) + text_ppl(4)) / 3, rel=1e-5)


def test_stream_evaluate_threshold_makes_low_confidence_silence_fire():
    # P(interval) at a silent frame is e^4 / (e^4 + 31) ~ 0.64: below 0.725 every frame fires at once
    _, metrics = run_scripted(threshold=0.725)
    assert metrics.frame_diff == pytest.approx((1 + 2 + 1) / 3)


def test_stream_evaluate_rejects_batches():
    with pytest.raises(ValueError, match="one sample"):
        stream_evaluate(
            None, None, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), frame_features=torch.zeros(1)
        )


def test_stream_evaluate_gives_a_policy_the_frame_of_each_decision():
    calls = []

    def at_frames_1_and_6(probs, frames):
        calls.append(frames.tolist())
        return (frames == 1) | (frames == 6)

    metrics = forced_stream_metrics(ScriptedStream(), LABELS, at_frames_1_and_6)
    # turn 1: frames 0-1, on time; turn 2: frames 2-4, silent, so the next 2 frames are probed; turn 3: frames 5-6
    assert calls == [[0, 1], [2, 3, 4], [5, 6], [5, 6]]
    assert metrics.frame_diff == pytest.approx((0 + 2 + 0) / 3)


@pytest.mark.parametrize(
    ("rate", "phase", "expected"),
    [(0.25, 0.0, [3, 7]), (0.25, 0.5, [1, 5]), (0.5, 0.0, [1, 3, 5, 7]), (0.3, 0.0, [3, 6])],
)
def test_periodic_fires_evenly_at_the_rate(rate, phase, expected):
    fires = periodic_fires(torch.arange(8), rate, phase)
    assert fires.nonzero()[:, 0].tolist() == expected
