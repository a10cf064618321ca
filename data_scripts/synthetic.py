"""Synthetic stream generator: rendered shape videos + annotations in the original Ego4D and COIN schemas.

A simple world of coloured shapes (circle, square, triangle in red, green, blue, yellow) on a textured, slowly
drifting background. Shapes appear, move, change colour and disappear; every event is narrated with a small closed
vocabulary ("#C C sees a red circle appear") at the time it becomes visible, so a tiny model can learn it from
32x32 or 64x64 frames. Deterministic for a seed.

Writes (the layout the VideoLLM-online loaders expect):

    {out}/ego4d/v2/full_scale/{video_uid}.mp4
    {out}/ego4d/v2/annotations/all_narrations_redacted.json              # {"videos": {uid: {"narrations": [...]}}}
    {out}/ego4d/v2/annotations/refined_narration_stream_{train,val}.json  # {uid: {annotation_uid: [{time, text}]}}
    {out}/ego4d/v2/annotations/{benchmark}_{val,test_unannotated}.json    # split lists (goalstep, nlq, ...)
    {out}/ego4d/v2/annotations/goalstep_livechat_trainval_filtered_21k.json  # [{video_uid, conversation}]
    {out}/coin/coin.json                                                  # {"database": {uid: {class, subset, ...}}}
    {out}/coin/videos/{video_uid}.mp4
    {out}/synthetic_events.json                                           # ground-truth events, for checks

Usage:

    videollm-mod data synthetic --output-dir data/synthetic --num-videos 8 --seconds 20 --resolution 64 \
        --fps 8 --num-coin-videos 8 --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np

from ..files import atomic_output_folder
from ._video import write_video
from .prepare_ego4d_narration import BENCHMARK_KEYS

logger = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (225, 35, 35), "green": (35, 200, 60), "blue": (40, 70, 235), "yellow": (240, 220, 30)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# COIN-style tasks: CamelCase class -> ordered steps (kind, argument). The main object of a task is its first placed.
COIN_TASKS = {
    "PaintCircle": [("place", "red circle"), ("paint", "blue"), ("remove", None)],
    "SlideSquare": [("place", "green square"), ("slide", "right"), ("slide", "down"), ("remove", None)],
    "PaintTVScreen": [("place", "blue square"), ("paint", "yellow"), ("slide", "left"), ("remove", None)],
    "MoveTriangle": [
        ("place", "green triangle"),
        ("slide", "up"),
        ("slide", "left"),
        ("paint", "red"),
        ("remove", None),
    ],
    "BuildTrafficLight": [("place", "red circle"), ("place", "yellow circle"), ("place", "green circle")],
}


@dataclass
class Event:
    """One change in the world over ``[start, end]`` seconds (``start == end``: instantaneous)."""

    kind: str  # appear | move | recolor | disappear
    obj: int
    start: float
    end: float
    shape: str
    color: str  # colour before the event
    new_color: str | None = None
    direction: str | None = None
    position: tuple[float, float] | None = None  # appear: centre, as fractions of the frame
    narration_time: float = 0.0

    @classmethod
    def from_dict(cls, record: dict) -> Event:
        """An event read back from ``synthetic_events.json`` (where it is ``asdict(event)``)."""
        return cls(**{**record, "position": tuple(record["position"]) if record["position"] else None})

    @property
    def narration(self) -> str:
        """Ego4D-style narration (before cleaning)."""
        return "#C C sees " + self._phrase()

    @property
    def refined(self) -> str:
        return "You see " + self._phrase() + "."

    @property
    def chat(self) -> str:
        """Live-chat assistant reply."""
        verb = {"appear": "appears", "disappear": "disappears"}
        subject = f"{'A' if self.kind == 'appear' else 'The'} {self.color} {self.shape}"
        if self.kind == "move":
            return f"{subject} moves {self.direction}."
        if self.kind == "recolor":
            return f"{subject} turns {self.new_color}."
        return f"{subject} {verb[self.kind]}."

    @property
    def past(self) -> str:
        """What happened, as the answer to "What just happened?"."""
        subject = f"{'A' if self.kind == 'appear' else 'The'} {self.color} {self.shape}"
        tail = {"appear": "appeared", "disappear": "disappeared", "move": f"moved {self.direction}"}
        return f"{subject} {tail.get(self.kind, f'turned {self.new_color}')}."

    def _phrase(self) -> str:
        article = "a" if self.kind == "appear" else "the"
        tail = {"appear": "appear", "disappear": "disappear", "move": f"move {self.direction}"}
        return f"{article} {self.color} {self.shape} " + tail.get(self.kind, f"turn {self.new_color}")


@dataclass
class Video:
    video_uid: str
    seconds: float
    events: list[Event] = field(default_factory=list)
    seed: int = 0


# ----------------------------------------------------------------------------------------------------------------
# rendering


class Renderer:
    """Renders a ``Video`` at ``resolution`` px: textured drifting background + shapes driven by the events."""

    def __init__(self, resolution: int, difficulty: int, seed: int):
        rng = np.random.default_rng(seed)
        self.resolution = resolution
        self.difficulty = difficulty
        self.radius = 0.14 * resolution
        self.rng = rng
        # low-frequency grey texture, tiled twice so a drifting window never leaves it
        coarse = rng.uniform(95, 140, size=(8, 8))
        reps = -(-2 * resolution // 8)
        texture = np.kron(coarse, np.ones((reps, reps)))[: 2 * resolution, : 2 * resolution]
        texture = texture + rng.normal(0, 4, size=texture.shape)
        self.texture = np.clip(texture, 0, 255)[..., None].repeat(3, axis=2)
        self.drift = 0.0 if difficulty == 0 else 1.0 + difficulty  # px per second
        self.yy, self.xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) + 0.5

    def frame(self, video: Video, t: float) -> np.ndarray:
        r = self.resolution
        offset = int(self.drift * t) % r
        image = self.texture[offset : offset + r, offset : offset + r].copy()
        for state in object_states(video.events, t):
            if state["scale"] <= 0:
                continue
            mask = self._mask(state["shape"], state["x"] * r, state["y"] * r, self.radius * state["scale"])
            image[mask] = state["rgb"]
        if self.difficulty >= 2:
            image = image + self.rng.normal(0, 5, size=image.shape)
        return np.clip(image, 0, 255).astype(np.uint8)

    def _mask(self, shape: str, cx: float, cy: float, radius: float) -> np.ndarray:
        dx, dy = self.xx - cx, self.yy - cy
        if shape == "circle":
            return dx * dx + dy * dy <= radius * radius
        if shape == "square":
            return (np.abs(dx) <= 0.85 * radius) & (np.abs(dy) <= 0.85 * radius)
        # triangle pointing up: apex at cy - radius, base at cy + 0.8 radius
        height = 1.8 * radius
        return (dy >= -radius) & (dy <= 0.8 * radius) & (np.abs(dx) <= (dy + radius) / height * radius * 1.1)


def render_video(video: Video, path: str, resolution: int, difficulty: int, fps: float) -> None:
    """Write ``video`` as an mp4 at ``fps`` (its background from ``video.seed``)."""
    renderer = Renderer(resolution, difficulty, video.seed)
    n = max(1, round(video.seconds * fps))
    write_video(path, np.stack([renderer.frame(video, i / fps) for i in range(n)]), fps)


def _progress(t: float, start: float, end: float) -> float:
    if end <= start:
        return 1.0 if t >= start else 0.0
    return float(np.clip((t - start) / (end - start), 0.0, 1.0))


def object_states(events: list[Event], t: float) -> list[dict]:
    """State of every object at time ``t``: shape, colour name, centre (fractions), visible scale and RGB colour."""
    states: dict[int, dict] = {}
    for e in sorted(events, key=lambda e: e.start):
        p = _progress(t, e.start, e.end)
        if e.kind == "appear":
            x, y = e.position
            states[e.obj] = {"shape": e.shape, "color": e.color, "x": x, "y": y, "scale": p,
                             "rgb": np.array(COLORS[e.color], float)}  # fmt: skip
            continue
        s = states[e.obj]
        if e.kind == "move":
            dx, dy = DIRECTIONS[e.direction]
            s["x"] += dx * MOVE_DISTANCE * p
            s["y"] += dy * MOVE_DISTANCE * p
        elif e.kind == "recolor":
            s["rgb"] = (1 - p) * s["rgb"] + p * np.array(COLORS[e.new_color], float)
            s["color"] = e.new_color if p >= 0.5 else s["color"]
        elif e.kind == "disappear":
            s["scale"] *= 1 - p
    return list(states.values())


MOVE_DISTANCE = 0.25  # fraction of the frame a move covers
MOVE_SECONDS = 0.25  # a move is quick: at 2 fps it is seen done one frame after it starts, at most
MIN_SEPARATION = 0.35  # between two centres, so that shapes never touch (radius 0.14)
MIN_EVENT_GAP = 1.0  # seconds between two events: at 2 fps each is narrated on its own frame, two frames apart


# ----------------------------------------------------------------------------------------------------------------
# frame captions (for the vision warm-up: what is on screen, in words)

CAPTION_GRID = 5  # a caption places each shape's centre on a 5 x 5 grid: finer than a move (a quarter of the frame)


def grid_cell(x: float, y: float) -> tuple[int, int]:
    """(column, row) of a centre (fractions of the frame) on the caption grid."""
    return min(int(x * CAPTION_GRID), CAPTION_GRID - 1), min(int(y * CAPTION_GRID), CAPTION_GRID - 1)


def frame_caption(events: list[Event], t: float) -> str:
    """What a frame at time ``t`` shows: "red circle x1 y3 and blue square x3 y0", or "nothing"; shapes are listed
    top to bottom, then left to right, so that a scene has one caption."""
    visible = [s for s in object_states(events, t) if s["scale"] >= 0.5]
    placed = sorted(((grid_cell(s["x"], s["y"])[::-1], s) for s in visible), key=lambda p: p[0])  # by row, column
    return " and ".join(f"{s['color']} {s['shape']} x{column} y{row}" for (row, column), s in placed) or "nothing"


# ----------------------------------------------------------------------------------------------------------------
# event scripts


def _free_position(rng: random.Random, present: dict[int, dict]) -> tuple[float, float]:
    """A centre that keeps clear of the present shapes (the best of a few draws)."""
    best = None
    for _ in range(50):
        x, y = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)
        gap = min((math.hypot(x - o["x"], y - o["y"]) for o in present.values()), default=1.0)
        if best is None or gap > best[0]:
            best = (gap, (round(x, 3), round(y, 3)))
        if gap > MIN_SEPARATION:
            break
    return best[1]


def _moves(o: dict, present: dict[int, dict]) -> list[str]:
    """Directions that keep a shape inside [0.15, 0.85] and off the other shapes."""
    valid = []
    for direction, (dx, dy) in DIRECTIONS.items():
        x, y = o["x"] + dx * MOVE_DISTANCE, o["y"] + dy * MOVE_DISTANCE
        clear = all(math.hypot(x - p["x"], y - p["y"]) > MIN_SEPARATION for p in present.values() if p is not o)
        if 0.15 <= x <= 0.85 and 0.15 <= y <= 0.85 and clear:
            valid.append(direction)
    return valid


def event_gap(rng: random.Random, event_interval: float) -> float:
    """Seconds to the next event: `MIN_EVENT_GAP` plus an exponential draw, so that the mean is `event_interval` and
    the times follow no rhythm (a Poisson process after a dead time, with long quiet stretches now and then)."""
    return MIN_EVENT_GAP + rng.expovariate(1.0 / max(event_interval - MIN_EVENT_GAP, 0.05))


def ego_video_events(rng: random.Random, seconds: float, difficulty: int, event_interval: float) -> list[Event]:
    """A random event sequence: at most ``1 + difficulty`` shapes at once, each (colour, shape) unique on screen.

    Event times are irregular (`event_gap`); the kind is drawn uniformly among those possible (a shape appears when
    the screen is empty), the shape, colour, place and direction uniformly among the free ones. Every change is
    complete within `MOVE_SECONDS` and narrated when it is complete.
    """
    max_objects = 1 + difficulty
    events: list[Event] = []
    present: dict[int, dict] = {}
    next_obj = 0
    t = 0.5 + rng.uniform(0.0, 1.0) * max(event_interval - 0.5, 0.0)
    while t < seconds - MOVE_SECONDS - 0.5:  # the last change is seen at least one frame before the end
        t = round(t, 2)
        taken = {(o["color"], o["shape"]) for o in present.values()}
        options = ["appear"] if len(present) < max_objects else []
        for obj, o in present.items():
            options += [("move", obj)] if _moves(o, present) else []
            options += [("recolor", obj)] if any((c, o["shape"]) not in taken for c in COLORS) else []
            options += [("disappear", obj)]
        # kinds first, then the object: each kind is as likely whatever the number of shapes
        kind = rng.choice(sorted({o if isinstance(o, str) else o[0] for o in options}))
        if kind == "appear":
            free = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in taken]
            color, shape = rng.choice(free)
            obj, next_obj = next_obj, next_obj + 1
            position = _free_position(rng, present)
            present[obj] = {"color": color, "shape": shape, "x": position[0], "y": position[1]}
            events.append(Event("appear", obj, t, t, shape, color, position=position, narration_time=t))
        else:
            obj = rng.choice([o[1] for o in options if o != "appear" and o[0] == kind])
            o = present[obj]
            if kind == "move":
                direction = rng.choice(_moves(o, present))
                dx, dy = DIRECTIONS[direction]
                o["x"] += dx * MOVE_DISTANCE
                o["y"] += dy * MOVE_DISTANCE
                end = round(t + MOVE_SECONDS, 2)
                events.append(Event("move", obj, t, end, o["shape"], o["color"], direction=direction,
                                    narration_time=end))  # fmt: skip
            elif kind == "recolor":
                new = rng.choice([c for c in COLORS if (c, o["shape"]) not in taken])
                events.append(Event("recolor", obj, t, t, o["shape"], o["color"], new_color=new, narration_time=t))
                o["color"] = new
            else:
                events.append(Event("disappear", obj, t, t, o["shape"], o["color"], narration_time=t))
                del present[obj]
        t += event_gap(rng, event_interval)
    return events


def coin_video_events(rng: random.Random, task: str) -> tuple[list[Event], list[dict], float]:
    """Events of one COIN-style task video, its step annotations ``[{segment, label}]`` and its length in seconds."""
    events: list[Event] = []
    steps: list[dict] = []
    objects: dict[int, dict] = {}
    t = round(rng.uniform(0.5, 2.0), 1)
    for kind, arg in COIN_TASKS[task]:
        start, end = t, round(t + rng.uniform(1.0, 2.5), 1)
        main = objects.get(0)
        if kind == "place":
            color, shape = arg.split()
            obj = len(objects)
            position = (0.5, 0.25 + 0.25 * obj) if task == "BuildTrafficLight" else (0.5, 0.5)
            objects[obj] = {"color": color, "shape": shape}
            events.append(Event("appear", obj, start, end, shape, color, position=position, narration_time=start))
            label = f"place a {color} {shape}"
        elif kind == "paint":
            events.append(Event("recolor", 0, start, end, main["shape"], main["color"], new_color=arg))
            main["color"] = arg
            label = f"paint the {main['shape']} {arg}"
        elif kind == "slide":
            events.append(Event("move", 0, start, end, main["shape"], main["color"], direction=arg))
            label = f"slide the {main['shape']} {arg}"
        else:
            events.append(Event("disappear", 0, start, end, main["shape"], main["color"]))
            label = f"remove the {main['shape']}"
        steps.append({"id": str(len(steps)), "segment": [start, end], "label": label})
        t = round(end + rng.uniform(0.0, 0.8), 1)
    return events, steps, round(t + 1.0, 1)


# ----------------------------------------------------------------------------------------------------------------
# annotations in the original schemas


def _noisy_narration(rng: random.Random, text: str, difficulty: int) -> str:
    """Raw Ego4D texts carry tags and stray punctuation that the original cleaning removes."""
    if difficulty == 0:
        return text
    return rng.choice(
        [text, text + ".", text.replace("#C C", "#c C") + " ", text + " #unsure", "#C " + text[3:] + " ,"]
    )


NUMBERS = ("None", "One", "Two", "Three")
QUESTION_RATE = 1 / 3  # default chance of a question after each event (at least one per video)


def visible_objects(events: list[Event], t: float) -> list[dict]:
    """The states (`object_states`) of the objects fully on screen at `t`."""
    return [s for s in object_states(events, t) if s["scale"] >= 1]


def only_of_their_shape(visible: list[dict]) -> list[dict]:
    """The objects of `visible` that no other object shares the shape of (a question can name them by shape)."""
    shapes = [s["shape"] for s in visible]
    return [s for s in visible if shapes.count(s["shape"]) == 1]


def colour_question(state: dict) -> tuple[str, str]:
    """The question about the colour of an object (named by its shape) and its answer."""
    return f"What colour is the {state['shape']}?", state["color"].capitalize() + "."


def on_screen_question(rng: random.Random, video: Video, index: int, t: float) -> tuple[str, str]:
    """A question about what is on screen at `t` (after event `index`) and its answer: what is there, how many
    shapes, the colour of a shape, or what just happened."""
    visible = visible_objects(video.events, t)
    kinds = ["see", "count", "happened"] + (["color"] if visible else [])
    kind = rng.choice(kinds)
    if kind == "count":
        return "How many shapes do you see?", NUMBERS[len(visible)] + "."
    if kind == "happened":
        return "What just happened?", video.events[index].past
    if kind == "color":
        unique = only_of_their_shape(visible)
        if unique:
            return colour_question(rng.choice(unique))
    # what is there, listed as the warm-up's captions list it: top to bottom, then left to right
    placed = sorted(visible, key=lambda s: grid_cell(s["x"], s["y"])[::-1])
    names = [f"a {s['color']} {s['shape']}" for s in placed]
    return "What do you see now?", "I see " + (" and ".join(names) if names else "nothing") + "."


def question_time(events: list[Event], index: int) -> float:
    """When a question about the screen is asked after event `index`: half-way to the next event's narration."""
    return round((events[index].narration_time + events[index + 1].narration_time) / 2, 2)


def livechat_conversation(rng: random.Random, video: Video, question_rate: float = QUESTION_RATE) -> list[dict]:
    """A GoalStep-style live chat: a request before the first event, replies at events, and questions about what is
    on screen (`on_screen_question`) half-way between an event and the next, after an event with probability
    `question_rate` (and after one event at least)."""
    if not video.events:
        return []
    first = video.events[0].narration_time
    conversation = [
        {"role": "user", "content": "Tell me whenever something changes in the scene.", "time": round(first / 2, 2)}
    ]
    always = rng.randrange(len(video.events))
    for i, event in enumerate(video.events):
        conversation.append({"role": "assistant", "content": event.chat, "time": round(event.narration_time, 2)})
        if (i == always or rng.random() < question_rate) and i + 1 < len(video.events):
            t = question_time(video.events, i)
            question, answer = on_screen_question(rng, video, i, t)
            conversation.append({"role": "user", "content": question, "time": t})
            conversation.append({"role": "assistant", "content": answer, "time": t})
    return conversation


def generate_dataset(
    output_dir: str,
    num_videos: int = 8,
    seconds: float = 20.0,
    fps: float = 8.0,
    resolution: int = 64,
    seed: int = 0,
    num_coin_videos: int = 8,
    difficulty: int = 1,
    event_interval: float = 2.0,
    val_fraction: float = 0.25,
    test_fraction: float = 0.25,
    frame_captions: int = 0,
    question_rate: float = QUESTION_RATE,
    overwrite: bool = False,
) -> dict[str, str]:
    """Render ``num_videos`` Ego4D-style and ``num_coin_videos`` COIN-style videos with annotations under ``output_dir``.

    Args:
        output_dir: folder to create (written to a temporary name first, renamed when complete).
        num_videos: Ego4D-style videos (narrations, refined narrations, live chat).
        seconds: length of each Ego4D-style video; COIN-style videos last as long as their task's steps.
        fps: frame rate of the rendered mp4s (a multiple of the training fps keeps event frames on its grid).
        resolution: square frame size in pixels.
        seed: everything (events, textures, splits, ids) derives from it.
        num_coin_videos: COIN-style task videos (cycling through ``COIN_TASKS``).
        difficulty: 0 (one shape, still background, clean texts) to 2 (three shapes, drift, pixel noise, noisy texts).
        event_interval: mean seconds between Ego4D-style events.
        val_fraction, test_fraction: Ego4D videos put in the val / test benchmark lists; COIN ``testing`` fraction
            is ``test_fraction``.
        frame_captions: random scenes of the world written with their captions for the vision warm-up
            (`write_frame_captions`).
        question_rate: the chance of a question about what is on screen after each event of a live chat.
    Returns:
        paths: ``ego4d_root``, ``ego4d_annotations``, ``ego4d_videos``, ``coin_root``, ``coin_json``, ``coin_videos``,
        ``events``, ``frame_captions``.
    """
    if difficulty not in (0, 1, 2):
        raise ValueError(f"difficulty must be 0, 1 or 2, got {difficulty}")
    with atomic_output_folder(output_dir, overwrite=overwrite) as tmp:
        _generate(str(tmp), num_videos, seconds, fps, resolution, seed, num_coin_videos, difficulty, event_interval,
                  val_fraction, test_fraction, frame_captions, question_rate)  # fmt: skip
    return dataset_paths(os.path.abspath(output_dir))


def dataset_paths(output_dir: str) -> dict[str, str]:
    """Where ``generate_dataset`` puts things."""
    ego4d = os.path.join(output_dir, "ego4d", "v2")
    coin = os.path.join(output_dir, "coin")
    return {
        "ego4d_root": ego4d,
        "ego4d_annotations": os.path.join(ego4d, "annotations"),
        "ego4d_videos": os.path.join(ego4d, "full_scale"),
        "livechat_json": os.path.join(ego4d, "annotations", "goalstep_livechat_trainval_filtered_21k.json"),
        "coin_root": coin,
        "coin_json": os.path.join(coin, "coin.json"),
        "coin_videos": os.path.join(coin, "videos"),
        "events": os.path.join(output_dir, "synthetic_events.json"),
        "frame_captions": os.path.join(output_dir, "frame_captions"),
    }


def random_scene(rng: random.Random, max_objects: int) -> list[Event]:
    """1 to ``max_objects`` shapes (one time in 20 none; each colour and shape pair at most once), placed apart,
    shown from time 0."""
    events: list[Event] = []
    present: dict[int, dict] = {}
    count = rng.randint(1, max_objects) if rng.random() >= 0.05 else 0
    pairs = rng.sample([(c, s) for c in COLORS for s in SHAPES], count)
    for obj, (color, shape) in enumerate(pairs):
        position = _free_position(rng, present)
        present[obj] = {"x": position[0], "y": position[1]}
        events.append(Event("appear", obj, 0.0, 0.0, shape, color, position=position))
    return events


def write_frame_captions(folder: str, num_frames: int, resolution: int, difficulty: int, seed: int) -> None:
    """(frame, caption) pairs for the vision warm-up as an image-folder dataset (`load_dataset("imagefolder",
    data_dir=folder)` gives the columns `image` and `text`): ``num_frames`` random scenes of the world (`random_scene`
    on a background of its own), captioned by `frame_caption`. The frames go through the mp4 codec and the model's
    own sampler, as video frames do, so the warm-up sees the colours a video shows. Scenes are drawn afresh rather
    than taken from the training videos, whose few scenes each a tower of this size would learn by heart (with their
    backgrounds) instead of learning shapes."""
    from PIL import Image

    from modeling_videollm_mod import load_video

    rng = random.Random(seed)
    os.makedirs(folder)
    chunk = 256  # scenes per temporary mp4
    with open(os.path.join(folder, "metadata.jsonl"), "w", encoding="utf-8") as metadata:
        for first in range(0, num_frames, chunk):
            scenes = [random_scene(rng, 1 + difficulty) for _ in range(min(chunk, num_frames - first))]
            frames = [Renderer(resolution, difficulty, rng.getrandbits(32)).frame(Video("", 1.0, events),
                                                                                  rng.uniform(0, 60))
                      for events in scenes]  # fmt: skip
            path = os.path.join(folder, "scenes.mp4")
            write_video(path, np.stack(frames), fps=1.0)
            decoded, _ = load_video(path, fps=1.0)
            os.remove(path)
            for i, (events, frame) in enumerate(zip(scenes, decoded, strict=True)):
                name = f"scene{first + i:06d}.png"
                Image.fromarray(frame).save(os.path.join(folder, name))
                metadata.write(json.dumps({"file_name": name, "text": frame_caption(events, 0.0)}) + "\n")


def _generate(out, num_videos, seconds, fps, resolution, seed, num_coin_videos, difficulty, event_interval,
              val_fraction, test_fraction, frame_captions, question_rate):  # fmt: skip
    paths = dataset_paths(out)
    for key in ("ego4d_annotations", "ego4d_videos", "coin_videos"):
        os.makedirs(paths[key])
    rng = random.Random(seed)
    all_events: dict[str, list[dict]] = {}

    def render(video: Video, path: str) -> None:
        render_video(video, path, resolution, difficulty, fps)
        all_events[video.video_uid] = [asdict(e) for e in video.events]

    # Ego4D-style videos: narrations, refined narrations, live chat, benchmark split lists
    videos = []
    for _ in range(num_videos):
        video = Video(str(uuid.UUID(int=rng.getrandbits(128))), seconds, seed=rng.getrandbits(32))
        video.events = ego_video_events(random.Random(video.seed), seconds, difficulty, event_interval)
        render(video, os.path.join(paths["ego4d_videos"], f"{video.video_uid}.mp4"))
        videos.append(video)
    order = list(range(num_videos))
    rng.shuffle(order)
    num_val = round(val_fraction * num_videos) if num_videos > 1 else 0
    num_test = round(test_fraction * num_videos) if num_videos > 2 else 0
    val = {videos[i].video_uid for i in order[:num_val]}
    test = {videos[i].video_uid for i in order[num_val : num_val + num_test]}
    if frame_captions:
        write_frame_captions(paths["frame_captions"], frame_captions, resolution, difficulty, rng.getrandbits(32))

    narrations, refined = {}, {"train": {}, "val": {}}
    for video in videos:
        annotation_uid = str(uuid.UUID(int=rng.getrandbits(128)))
        text_rng = random.Random(video.seed + 1)
        records = [
            {"time": round(e.narration_time, 3), "text": _noisy_narration(text_rng, e.narration, difficulty),
             "_annotation_uid": annotation_uid}
            for e in video.events
        ]  # fmt: skip
        if difficulty >= 1 and video.events:  # a one-word narration the cleaning drops
            records.insert(
                len(records) // 2, {"time": records[-1]["time"], "text": "#C C", "_annotation_uid": annotation_uid}
            )
        narrations[video.video_uid] = {"narrations": records}
        split = "val" if video.video_uid in val else ("train" if video.video_uid not in test else None)
        if split is not None:
            refined[split][video.video_uid] = {
                annotation_uid: [{"time": round(e.narration_time, 3), "text": e.refined} for e in video.events]
            }
    annotations = paths["ego4d_annotations"]
    _dump({"videos": narrations}, os.path.join(annotations, "all_narrations_redacted.json"))
    for split, streams in refined.items():
        _dump(streams, os.path.join(annotations, f"refined_narration_stream_{split}.json"))
    for benchmark, key in BENCHMARK_KEYS.items():
        for split, uids in (("val", val), ("test_unannotated", test)):
            listed = sorted(uids) if benchmark in ("goalstep", "nlq") else []
            _dump(
                {key: [{"video_uid": uid} for uid in listed]}, os.path.join(annotations, f"{benchmark}_{split}.json")
            )
    chats = [
        {"video_uid": v.video_uid, "conversation": livechat_conversation(random.Random(v.seed + 2), v, question_rate)}
        for v in videos
        if v.video_uid not in test
    ]
    _dump(chats, paths["livechat_json"])

    # COIN-style task videos
    database = {}
    tasks = sorted(COIN_TASKS)
    num_coin_test = max(1, round(test_fraction * num_coin_videos)) if num_coin_videos > 1 else 0
    for i in range(num_coin_videos):
        video_seed = rng.getrandbits(32)
        task = tasks[i % len(tasks)]
        events, steps, length = coin_video_events(random.Random(video_seed), task)
        video_uid = f"syn{i:05d}{video_seed % 1000:03d}"
        render(Video(video_uid, length, events, video_seed), os.path.join(paths["coin_videos"], f"{video_uid}.mp4"))
        database[video_uid] = {
            "recipe_type": tasks.index(task),
            "class": task,
            "subset": "testing" if i >= num_coin_videos - num_coin_test else "training",
            "start": steps[0]["segment"][0],
            "end": steps[-1]["segment"][1],
            "video_url": f"synthetic://{video_uid}",
            "annotation": steps,
        }
    _dump({"database": database}, paths["coin_json"])
    _dump(all_events, paths["events"])


def _dump(obj, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="videollm-mod data synthetic",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-videos", type=int, default=8, help="Ego4D-style videos (default: %(default)s)")
    parser.add_argument("--num-coin-videos", type=int, default=8, help="COIN-style task videos (default: %(default)s)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="length of each Ego4D-style video in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--fps", type=float, default=8.0, help="frame rate of the rendered videos (default: %(default)s)"
    )
    parser.add_argument(
        "--resolution", type=int, default=64, help="square frame size in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--difficulty",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="0: one shape, still background, clean texts; 2: three shapes, drift, pixel noise, noisy texts "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--event-interval", type=float, default=2.0, help="mean seconds between events (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--frame-captions",
        type=int,
        default=0,
        help="captioned random scenes written for the vision warm-up (default: %(default)s)",
    )
    parser.add_argument("--question-rate", type=float, default=QUESTION_RATE,
                        help="chance of a question about what is on screen after each event of a live chat")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    paths = generate_dataset(
        args.output_dir, num_videos=args.num_videos, seconds=args.seconds, fps=args.fps, resolution=args.resolution,
        seed=args.seed, num_coin_videos=args.num_coin_videos, difficulty=args.difficulty,
        event_interval=args.event_interval, frame_captions=args.frame_captions, question_rate=args.question_rate,
        overwrite=args.overwrite,
    )  # fmt: skip
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod data synthetic", main, sys.argv[1:]))
