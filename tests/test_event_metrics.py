"""Event scoring of free-running narration: content word matching, one-to-one matching, aggregation."""

import pytest

from videollm_mod.recipes.event_metrics import (
    aggregate_event_scores,
    answer_matches,
    content_words,
    names,
    score_events,
    wilson_interval,
)


def test_content_words_drop_function_words():
    assert content_words("C sees the red circle turn blue.") == ["red", "circle", "turn", "blue"]


@pytest.mark.parametrize(
    ("reply", "reference", "expected"),
    [
        ("C sees the red circle turn blue.", "C sees the red circle turn blue.", True),
        ("The red circle turns blue.", "C sees the red circle turn blue.", True),  # chat form: "turns" = "turn"
        ("C sees the blue circle turn red.", "C sees the red circle turn blue.", False),  # same words, wrong order
        ("C sees the red square turn blue.", "C sees the red circle turn blue.", False),
        ("C sees a red circle appear.", "C sees a red circle appear.", True),
        ("C sees a red circle.", "C sees a red circle appear.", False),  # the action is missing
        ("C picks up the knifes", "C picks up a knife.", True),
        ("C picks up a knive", "C picks up a knife.", True),  # one edit in a word of >= 5 letters
        ("C pics up a knife", "C picks up a knife.", False),  # "pick" has 4 letters: no edit forgiven
    ],
)
def test_a_reply_names_a_reference_by_its_content_words_in_order(reply, reference, expected):
    assert names(reply, reference) is expected


def test_events_match_one_to_one_within_the_tolerance_closest_first():
    references = [(2.0, "C sees a red circle appear."), (5.0, "C sees the red circle move left.")]
    replies = [
        (2.5, "C sees a red circle appear."),  # hit, 0.5 s late
        (3.0, "C sees a red circle appear."),  # names the first event too, but it is taken
        (4.5, "C sees the red circle move right."),  # in time, wrong direction
        (9.0, "C sees the red circle move left."),  # right text, too late
    ]
    score = score_events(replies, references, tolerance=1.0)
    assert (score.replies, score.references, score.hits, score.lags) == (4, 2, 1, [0.5])
    # nearest references: 2.0, 2.0, 5.0, 5.0 -> named: yes, yes, no, yes
    assert score.named_nearest == 3


def test_aggregate_totals_over_streams():
    a = score_events([(1.0, "a red circle appear")], [(1.0, "a red circle appear"), (4.0, "the red circle move up")])
    b = score_events(
        [(3.0, "a blue square appear"), (6.5, "the blue square disappear")], [(6.0, "the blue square disappear")]
    )
    metrics = aggregate_event_scores([a, b])
    # hits 2 of 3 replies, 2 of 3 references; lags 0.0 and 0.5
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert (metrics["mean_lag"], metrics["mean_abs_lag"]) == (0.25, 0.25)
    assert metrics["content_accuracy"] == pytest.approx(2 / 3)


def test_a_silent_policy_scores_zero():
    metrics = aggregate_event_scores([score_events([], [(1.0, "a red circle appear")])])
    assert (metrics["precision"], metrics["recall"], metrics["f1"], metrics["mean_lag"]) == (0.0, 0.0, 0.0, None)


@pytest.mark.parametrize(
    "reply, reference, expected",
    [
        ("I see a blue square and a red circle.", "I see a red circle and a blue square.", True),
        ("I see a red square and a blue circle.", "I see a red circle and a blue square.", False),
        ("I see a red circle.", "I see a red circle and a blue square.", False),
        ("Two.", "Two.", True),
        ("One.", "Two.", False),
        ("Blue.", "Blue.", True),
        ("the red circle moved left", "The red circle moved left.", True),
        ("The red circle moved right.", "The red circle moved left.", False),
        ("I see nothing.", "I see nothing.", True),
    ],
)
def test_an_answer_matches_clause_by_clause_in_any_order(reply, reference, expected):
    assert answer_matches(reply, reference) is expected


@pytest.mark.parametrize("right, asked", [(80, 104), (273, 326), (3, 4), (0, 10), (10, 10)])
def test_the_wilson_interval_bounds_are_where_the_score_test_is_on_its_edge(right, asked):
    # the bounds p solve (right / asked - p)^2 = z^2 p (1 - p) / asked; 0 and 1 are the bounds of 0 and all right
    low, high = wilson_interval(right, asked)
    for p in (low, high):
        assert (right / asked - p) ** 2 == pytest.approx(1.96**2 * p * (1 - p) / asked, abs=1e-12)
    assert low < right / asked < high or right in (0, asked)


def test_the_wilson_interval_of_the_demos_answers_and_of_no_question():
    assert wilson_interval(80, 104) == pytest.approx((0.6795, 0.8397), abs=1e-4)  # 0.769, +- 0.08
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing asked: nothing known
