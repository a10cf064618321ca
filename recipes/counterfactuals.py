"""Counterfactual checks of a narration model on the synthetic world: change one thing in a video and see whether
the narration changes with it (a model that does not look at the frames fails them all).

- `black`: a black video as long as the others: a model that sees says (almost) nothing.
- `swapped colours`: the same events with every colour swapped (red <-> blue, green <-> yellow): the replies name
  the swapped colours.
- `shifted`: the same events `shift` seconds later (the video that much longer): the replies come that much later.
- `colour questions` (`colour_questions`, `answers`): "What colour is the circle?" asked mid-stream, half-way between
  two events, about a shape on screen: the answer names its colour, the swapped one in the swapped video.

The videos are rendered by `data_scripts.synthetic` (its `Renderer`, written as mp4 and decoded by the model's own
sampler, as every other video) and narrated from their first frame without a query, as `videollm-mod narrate` does.
"""

from __future__ import annotations

import dataclasses
import os
import random
import statistics

import numpy as np

from .event_metrics import words
from .generation_settings import SENTENCE_TOKENS

SWAPPED = {"red": "blue", "blue": "red", "green": "yellow", "yellow": "green"}


def swap_colors(events: list) -> list:
    """The same events with every colour replaced by its `SWAPPED` partner."""
    return [dataclasses.replace(e, color=SWAPPED[e.color], new_color=SWAPPED.get(e.new_color)) for e in events]


def shift_events(events: list, seconds: float) -> list:
    """The same events `seconds` later."""
    return [
        dataclasses.replace(e, start=e.start + seconds, end=e.end + seconds, narration_time=e.narration_time + seconds)
        for e in events
    ]


def render(path: str, events: list, seconds: float, seed: int, resolution: int = 48, fps: float = 4.0,
           difficulty: int = 1) -> str:  # fmt: skip
    """Write the video of `events` (`seed`: the background's) as an mp4 at `fps`; returns `path`."""
    from ..data_scripts.synthetic import Video, render_video

    render_video(Video(os.path.basename(path), seconds, events, seed), path, resolution, difficulty, fps)
    return path


def render_black(path: str, seconds: float, resolution: int = 48, fps: float = 4.0) -> str:
    """Write a black video; returns `path`."""
    from ..data_scripts._video import write_video

    write_video(path, np.zeros((round(seconds * fps), resolution, resolution, 3), dtype=np.uint8), fps)
    return path


def random_events(seed: int, seconds: float, difficulty: int = 1, event_interval: float = 2.5) -> list:
    """The events of a synthetic video (`synthetic.ego_video_events`) from `seed`."""
    from ..data_scripts.synthetic import ego_video_events

    return ego_video_events(random.Random(seed), seconds, difficulty, event_interval)


def replies(model, processor, path: str, max_new_tokens: int = SENTENCE_TOKENS) -> list[tuple[float, str]]:
    """`(time, text)` of what the model says over the video (no query, the default threshold)."""
    events = model.stream_generate(path, processor, max_new_tokens=max_new_tokens, chunk_size=8)
    return [(e.time, e.text) for e in events if e.role == "assistant"]


def colors_named(text: str) -> list[str]:
    return [w for w in words(text) if w in SWAPPED]


def event_colors(event) -> list[str]:
    """The colours a narration of `event` names, in order ("the red circle turn blue": red, blue)."""
    return [event.color] + ([event.new_color] if event.kind == "recolor" else [])


def colors_right(said: list[tuple[float, str]], events: list, tolerance: float = 1.0) -> tuple[int, int]:
    """`(right, counted)`: replies within `tolerance` seconds after or before an event's narration time, and among
    them those that name exactly the nearest such event's colours."""
    right = counted = 0
    for time, text in said:
        near = [e for e in events if abs(e.narration_time - time) <= tolerance]
        if near:
            nearest = min(near, key=lambda e: abs(e.narration_time - time))
            counted += 1
            right += colors_named(text) == event_colors(nearest)
    return right, counted


def shift_errors(original: list[tuple[float, str]], shifted: list[tuple[float, str]], seconds: float) -> list[float]:
    """For each reply of the original video, `|t' - t - seconds|` for the shifted video's reply with the same text
    closest to `t + seconds` (replies without a counterpart are left out)."""
    errors = []
    for time, text in original:
        times = [t for t, other in shifted if other == text]
        if times:
            errors.append(min(abs(t - time - seconds) for t in times))
    return errors


def colour_questions(events: list) -> list[tuple[float, str, str]]:
    """`(time, question, colour)`: half-way between each two events, the live chats' question about the colour of
    the first object on screen that is the only one of its shape (`synthetic.colour_question`)."""
    from ..data_scripts.synthetic import colour_question, only_of_their_shape, visible_objects

    questions = []
    for event, following in zip(events, events[1:], strict=False):  # each event with the next
        time = round((event.narration_time + following.narration_time) / 2, 2)
        unique = only_of_their_shape(visible_objects(events, time))
        if unique:
            questions.append((time, colour_question(unique[0])[0], unique[0]["color"]))
    return questions


def answers(model, processor, path: str, questions: list[tuple[float, str, str]]) -> list[str]:
    """What the model answers to each question of `questions` (`colour_questions`), all asked in one stream of the
    video at their times ("" where it gave no answer)."""
    from .free_running import answers_to

    events = list(model.stream_generate(path, processor, queries=[(t, q) for t, q, _ in questions], chunk_size=8,
                                        max_new_tokens=SENTENCE_TOKENS))  # fmt: skip
    return [answer or "" for answer in answers_to(events, [(t, q) for t, q, _ in questions])]


def summary(errors: list[float]) -> float | None:
    return statistics.median(errors) if errors else None


__all__ = [
    "SWAPPED",
    "answers",
    "colors_right",
    "colour_questions",
    "random_events",
    "render",
    "render_black",
    "replies",
    "shift_errors",
    "shift_events",
    "swap_colors",
]
