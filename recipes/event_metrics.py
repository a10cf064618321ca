"""Scoring what a model says against reference replies: does a reply name the event, and when is it said?

A reply *names* a reference text when the reference's content words (its words, lower-cased, without the function
words of `FUNCTION_WORDS`) appear in the reply in the same order, each matched by `same_word` (a plural or third-person
"s" and, in words of five letters or more, one edit are forgiven). For the synthetic narrations ("C sees the red
circle turn blue.") the content words are exactly the colour, the shape and the action, so a reply names the event
when it names all three, in order ("the blue circle turn red" does not); for user data it is a fuzzy word match.

- `content_accuracy`: the fraction of replies that name the reference nearest in time;
- answers (`answer_matches`): an answer to a question is right when it says what the reference says, clause by
  clause, in any order of the clauses;
- events (`score_events`): a reply within `tolerance` seconds of a reference that it names is a hit; replies and
  references are matched one to one, closest pairs first. Precision = hits / replies, recall = hits / references,
  F1 their harmonic mean, lag = reply time - reference time of the hits (> 0: late).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .metrics import levenshtein

FUNCTION_WORDS = frozenset("a an the and of to in on at is are it i you c sees see".split())


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % at the default `z`): the proportions p whose normal test would
    not reject `successes / trials`. Why: a figure such as 80 answers right of 104 has a binomial error of about 0.04,
    as large as most differences between two trained models; the interval says so beside the figure."""
    if trials <= 0:
        return 0.0, 1.0
    p, zz = successes / trials, z * z / trials
    centre = (p + zz / 2) / (1 + zz)
    half = z * math.sqrt(p * (1 - p) / trials + zz / (4 * trials)) / (1 + zz)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in FUNCTION_WORDS]


def same_word(a: str, b: str) -> bool:
    """Equal after dropping a final "s" ("moves" = "move"), or one edit apart when both have >= 5 letters."""
    a, b = a.removesuffix("s"), b.removesuffix("s")
    return a == b or (min(len(a), len(b)) >= 5 and levenshtein(a, b) <= 1)


def names(reply: str, reference: str) -> bool:
    """Whether `reply` names `reference`: its content words appear in the reply in order (see the module docs)."""
    remaining = iter(words(reply))  # consumed as the reference's words are found: the order must hold
    return all(any(same_word(word, candidate) for candidate in remaining) for word in content_words(reference))


def clauses(text: str) -> list[list[str]]:
    """The content words of each clause of `text` (split at "and" and commas): "I see a red circle and a blue
    square." -> [["red", "circle"], ["blue", "square"]]."""
    parts = re.split(r"\band\b|,", text.lower())
    return [words for words in (content_words(part) for part in parts) if words]


def answer_matches(reply: str, reference: str) -> bool:
    """Whether `reply` answers as `reference` does: the same clauses (`clauses`), each with the same content words
    in order (`same_word`), in any order of the clauses ("a blue square and a red circle" answers "a red circle and
    a blue square"; "a red square and a blue circle" does not)."""
    left = clauses(reply)
    wanted = clauses(reference)
    if len(left) != len(wanted):
        return False
    for clause in wanted:
        match = next((c for c in left if len(c) == len(clause) and all(map(same_word, c, clause))), None)
        if match is None:
            return False
        left.remove(match)
    return True


@dataclass
class EventScore:
    """One stream's counts: replies, references, hits, the lags of the hits (seconds) and how many replies name the
    reference nearest in time."""

    replies: int
    references: int
    hits: int
    named_nearest: int
    lags: list[float] = field(default_factory=list)


def score_events(
    replies: Sequence[tuple[float, str]], references: Sequence[tuple[float, str]], tolerance: float = 1.0
) -> EventScore:
    """Match `(time, text)` replies to `(time, text)` references (see the module docstring)."""
    pairs = sorted(
        (abs(r_time - f_time), i, j)
        for i, (r_time, r_text) in enumerate(replies)
        for j, (f_time, f_text) in enumerate(references)
        if abs(r_time - f_time) <= tolerance + 1e-9 and names(r_text, f_text)
    )
    used_replies, used_references, lags = set(), set(), []
    for _, i, j in pairs:
        if i not in used_replies and j not in used_references:
            used_replies.add(i)
            used_references.add(j)
            lags.append(replies[i][0] - references[j][0])
    named = 0
    if references:
        for time, text in replies:
            nearest = min(references, key=lambda ref: abs(ref[0] - time))  # ties: the earlier reference
            named += names(text, nearest[1])
    return EventScore(len(replies), len(references), len(lags), named, lags)


def aggregate_event_scores(scores: Sequence[EventScore]) -> dict[str, float | int | None]:
    """Totals over streams: `precision`, `recall`, `f1`, `content_accuracy`, `mean_lag`, `mean_abs_lag` (seconds,
    `None` without hits), and the counts `replies`, `references`, `hits`."""
    replies = sum(s.replies for s in scores)
    references = sum(s.references for s in scores)
    hits = sum(s.hits for s in scores)
    lags = [lag for s in scores for lag in s.lags]
    precision = hits / replies if replies else 0.0
    recall = hits / references if references else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "content_accuracy": sum(s.named_nearest for s in scores) / replies if replies else 0.0,
        "mean_lag": sum(lags) / len(lags) if lags else None,
        "mean_abs_lag": sum(abs(lag) for lag in lags) / len(lags) if lags else None,
        "replies": replies,
        "references": references,
        "hits": hits,
    }


__all__ = [
    "FUNCTION_WORDS",
    "EventScore",
    "aggregate_event_scores",
    "answer_matches",
    "clauses",
    "content_words",
    "names",
    "same_word",
    "score_events",
    "words",
]
