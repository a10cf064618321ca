"""Synthetic Ego-Exo4D takes: rendered ego videos + takes.json, atomic descriptions and keysteps in the v2 schemas.

Each take performs one procedure of `synthetic.COIN_TASKS` (place, paint, slide and remove coloured shapes) with the
events of `synthetic.coin_video_events`, rendered by `synthetic.Renderer` as the take's ego (Aria RGB) video. Its
keysteps are the procedure's steps (scenario: the task; taxonomy: the scenario's root and its steps as leaves); its
atomic descriptions narrate each step's event half-way through it ("C sees the blue square turn yellow."), and from
difficulty 1 one more describes another person and is marked not visible from the ego view (`prepare_egoexo4d`
leaves it out). takes.json lists an exo camera too, whose video is not rendered. Deterministic for a seed.

Writes the layout of an Ego-Exo4D download (`prepare_egoexo4d` documents the schemas):

    {out}/takes.json
    {out}/takes/{take_name}/frame_aligned_videos/aria01_214-1.mp4
    {out}/annotations/atomic_descriptions_{train,val}.json
    {out}/annotations/keystep_{train,val}.json

Usage:

    videollm-mod data synthetic_egoexo4d --output-dir data/synthetic_egoexo4d --num-takes 10 --fps 8 --resolution 64
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import uuid

import numpy as np

from ..files import atomic_output_folder
from ._video import write_video
from .synthetic import COIN_TASKS, Renderer, Video, coin_video_events

logger = logging.getLogger(__name__)

EGO_CAMERA, EGO_STREAM = "aria01", "214-1"  # the Aria RGB stream, as in Ego-Exo4D's file names
EXO_CAMERA = "cam01"
FIRST_UNIQUE_ID = 800


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


def keystep_vocabulary() -> dict[str, list[str]]:
    """``{task: [step labels]}``: the labels depend only on the task, so one draw of its events gives them."""
    return {
        task: [step["label"] for step in coin_video_events(random.Random(0), task)[1]] for task in sorted(COIN_TASKS)
    }


def take_record(take_uid: str, take_name: str, task: str, seconds: float) -> dict:
    """A takes.json entry with the documented fields the prepare script reads (and a few more for realism)."""

    def stream(cam_id: str, stream_id: str, readable: str, relative_path: str) -> dict:
        return {"cam_id": cam_id, "stream_id": stream_id, "readable_stream_id": readable, "clip_uid": None,
                "relative_path": relative_path}  # fmt: skip

    return {
        "take_uid": take_uid,
        "take_name": take_name,
        "root_dir": f"takes/{take_name}",
        "task_name": task,
        "parent_task_name": "Synthetic shapes",
        "duration_sec": seconds,
        "best_exo": EXO_CAMERA,
        "capture": {
            "capture_name": take_name.rsplit("_", 1)[0],
            "cameras": [
                {"cam_id": EGO_CAMERA, "is_ego": True, "device_type": "aria"},
                {"cam_id": EXO_CAMERA, "is_ego": False, "device_type": "hero10"},
            ],
        },
        "frame_aligned_videos": {
            EGO_CAMERA: {
                "rgb": stream(EGO_CAMERA, EGO_STREAM, "rgb", f"frame_aligned_videos/{EGO_CAMERA}_{EGO_STREAM}.mp4")
            },
            EXO_CAMERA: {"0": stream(EXO_CAMERA, "0", "0", f"frame_aligned_videos/{EXO_CAMERA}.mp4")},
        },
    }


def atomic_annotation(rng: random.Random, events, difficulty: int) -> dict:
    """One annotator's descriptions: each event at its midpoint; from difficulty 1 an invisible one about someone else."""
    descriptions = [
        {"text": event.narration.replace("#C ", "", 1) + ".", "timestamp": round((event.start + event.end) / 2, 3),
         "narration_subject": "C", "ego_visible": True, "best_exo": {"raw_cam_id": "1", "cam_id": EXO_CAMERA},
         "unsure": False}
        for event in events
    ]  # fmt: skip
    if difficulty >= 1 and events:
        descriptions.insert(1, {"text": "The man X waves at C.", "timestamp": descriptions[0]["timestamp"],
                                "narration_subject": "O", "ego_visible": False,
                                "best_exo": {"raw_cam_id": "1", "cam_id": EXO_CAMERA}, "unsure": False})  # fmt: skip
    return {"annotation_uid": _uid(rng), "annotator_id": str(rng.getrandbits(52)), "rejected": False,
            "reject_reason": None, "descriptions": descriptions}  # fmt: skip


def keystep_taxonomy(vocabulary: dict[str, list[str]], unique_ids: dict[str, int]) -> dict[str, dict]:
    """Per scenario: node "0" the scenario, then its steps as leaves (ids 1, 2, ...)."""
    taxonomy = {}
    for task, labels in vocabulary.items():
        nodes = {"0": {"id": 0, "is_leafnode": False, "name": task, "parent_id": None, "parent_name": None}}
        for i, label in enumerate(dict.fromkeys(labels), 1):
            nodes[str(i)] = {"id": i, "is_leafnode": True, "name": label, "parent_id": 0, "parent_name": task,
                             "unique_id": unique_ids[label]}  # fmt: skip
        taxonomy[task] = nodes
    return taxonomy


def generate_egoexo4d(
    output_dir: str,
    num_takes: int = 10,
    fps: float = 8.0,
    resolution: int = 64,
    seed: int = 0,
    difficulty: int = 1,
    val_fraction: float = 0.3,
    overwrite: bool = False,
) -> dict[str, str]:
    """Render ``num_takes`` takes (cycling through ``COIN_TASKS``) with their annotations under ``output_dir``.

    Returns:
        paths: ``root`` (the download folder: ``--egoexo-root`` and ``--video-root`` of ``prepare_egoexo4d``),
        ``takes_json`` and ``annotations``.
    """
    with atomic_output_folder(output_dir, overwrite=overwrite) as tmp:
        _generate(str(tmp), num_takes, fps, resolution, seed, difficulty, val_fraction)
    root = os.path.abspath(output_dir)
    return {
        "root": root,
        "takes_json": os.path.join(root, "takes.json"),
        "annotations": os.path.join(root, "annotations"),
    }


def _generate(out: str, num_takes: int, fps: float, resolution: int, seed: int, difficulty: int, val_fraction: float):
    rng = random.Random(seed)
    vocabulary = keystep_vocabulary()
    labels = sorted({label for steps in vocabulary.values() for label in steps})
    unique_ids = {label: FIRST_UNIQUE_ID + i for i, label in enumerate(labels)}
    num_val = max(1, round(val_fraction * num_takes)) if num_takes > 1 else 0
    takes, atomic, keysteps = [], {"train": {}, "val": {}}, {"train": {}, "val": {}}
    for i in range(num_takes):
        task = sorted(COIN_TASKS)[i % len(COIN_TASKS)]
        take_seed = rng.getrandbits(32)
        events, steps, seconds = coin_video_events(random.Random(take_seed), task)
        take_uid, take_name = _uid(rng), f"synthetic_{task.lower()}_{i:03d}_1"
        split = "val" if i >= num_takes - num_val else "train"
        takes.append(take_record(take_uid, take_name, task, seconds))

        renderer, video = Renderer(resolution, difficulty, take_seed), Video(take_uid, seconds, events, take_seed)
        folder = os.path.join(out, "takes", take_name, "frame_aligned_videos")
        os.makedirs(folder)
        frames = np.stack([renderer.frame(video, t / fps) for t in range(max(1, round(seconds * fps)))])
        write_video(os.path.join(folder, f"{EGO_CAMERA}_{EGO_STREAM}.mp4"), frames, fps)

        atomic[split][take_uid] = [atomic_annotation(rng, events, difficulty)]
        keysteps[split][take_uid] = {
            "take_uid": take_uid,
            "take_name": take_name,
            "scenario": task,
            "segments": [
                {"start_time": step["segment"][0], "end_time": step["segment"][1],
                 "step_id": vocabulary[task].index(step["label"]) + 1, "step_name": step["label"],
                 "step_description": step["label"], "is_essential": True, "step_unique_id": unique_ids[step["label"]]}
                for step in steps
            ],
        }  # fmt: skip
    _dump(takes, os.path.join(out, "takes.json"))
    taxonomy = keystep_taxonomy(vocabulary, unique_ids)
    os.makedirs(os.path.join(out, "annotations"))
    for split in ("train", "val"):
        _dump({"annotations": atomic[split]}, os.path.join(out, "annotations", f"atomic_descriptions_{split}.json"))
        keystep = {"annotations": keysteps[split], "taxonomy": taxonomy,
                   "vocabulary": {str(unique_ids[label]): label for label in labels}}  # fmt: skip
        _dump(keystep, os.path.join(out, "annotations", f"keystep_{split}.json"))


def _dump(obj, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="videollm-mod data synthetic_egoexo4d",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-takes", type=int, default=10, help="takes to render (default: %(default)s)")
    parser.add_argument(
        "--fps", type=float, default=8.0, help="frame rate of the rendered videos (default: %(default)s)"
    )
    parser.add_argument(
        "--resolution", type=int, default=64, help="square frame size in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--difficulty", type=int, default=1, choices=(0, 1, 2), help="as in `data synthetic` (default: %(default)s)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.3, help="share of takes in the val split (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    paths = generate_egoexo4d(args.output_dir, num_takes=args.num_takes, fps=args.fps, resolution=args.resolution,
                              seed=args.seed, difficulty=args.difficulty, val_fraction=args.val_fraction,
                              overwrite=args.overwrite)  # fmt: skip
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod data synthetic_egoexo4d", main, sys.argv[1:]))
