"""The shared part of the MoD study (`recipes.mod_study`): synthetic streams, one warmed-up vision tower, features.

Every variant of the study trains on the same frame features from one frozen vision tower, as the original trains on
pre-computed SigLIP features, so that a variant costs minutes and differs from the others only in its decoder.

Three seeds of the synthetic world (`data_scripts.synthetic`), never mixed:

- `train`: narration streams (Ego4D narration schema -> `prepare_ego4d_narration`), live-chat streams with questions
  about what is on screen (GoalStep live-chat schema -> `prepare_ego4d_goalstep_livechat`) and COIN-style task
  videos (-> `prepare_coin` step / next / task), plus captioned random scenes for the vision warm-up and, where the
  plan asks for them, quiet streams in which nothing happens (`render_quiet`);
- `val`: the same streams for the choices made while building the recipe;
- `test`: the same streams and COIN-style videos on which every variant is measured, used by nothing else.

Each stage is cached in the work folder (a stage whose output exists is skipped), so the study can be resumed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass

from ..data_scripts.synthetic import QUESTION_RATE
from ..errors import UserError
from ..files import read_json, write_text_atomically

logger = logging.getLogger(__name__)

FPS = 2.0  # frames per second of the streams, as the original trains
SPLITS = ("train", "val", "test")
QUIET_ROWS = "rows.json"  # beside the quiet videos: their narration streams (`render_quiet`)
SPLIT_SETTINGS = "data_settings.json"  # in each split's folder: the plan's settings its data was made with


@dataclass
class DataPlan:
    """Sizes of the study's data and of its vision warm-up (`StudyPlan.data`)."""

    train_videos: int = 900  # at 300 (25 epochs, same steps) the dense model scored F1 0.72 on val, at 900 0.83
    val_videos: int = 40
    test_videos: int = 40
    seconds: float = 20.0  # length of every video (at 60 s and 4 epochs the dense model never learned to look)
    max_stream_frames: int | None = None  # training streams are cut before the turn that would pass this many frames
    event_interval: float = 2.5  # mean seconds between events (irregular: a dead time plus an exponential gap)
    # training live chats: the chance of a question about the screen after each event (held-out streams keep the
    # world's `QUESTION_RATE`, so that every plan is measured on the same questions)
    question_rate: float = QUESTION_RATE
    # training videos in which nothing happens (half an empty scene, half black), narrated with silence: a model
    # trained only on streams with events learns that something is always about to happen, and talks over nothing
    quiet_videos: int = 0
    coin_train_videos: int = 0  # COIN-style task videos (at 200, their short rows were 70 % of the training rows)
    coin_test_videos: int = 0
    resolution: int = 48
    # each frame's patch grid average-pooled to frame_grid x frame_grid tokens after the pooled token, as the
    # original's 1+3x3; a finer grid is the resolution MoD is meant to buy (4: 17 tokens a frame)
    frame_grid: int = 3
    seed: int = 100  # train; val and test use seed + 1 and seed + 2
    frame_captions: int = 24000  # captioned random scenes for the warm-up
    warmup_epochs: float = 10.0  # shape probe 0.87 (3 epochs at batch 64: 0.76), motion 0.36 (0.27)
    warmup_batch_size: int = 128
    warmup_learning_rate: float = 1e-3
    tower_hidden_size: int = 128
    tower_layers: int = 2
    tower_patch_size: int = 8
    # a warmed-up tower folder to share (another plan's); else one is warmed up on this plan's captions
    tower: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def split_seed(plan: DataPlan, split: str) -> int:
    return plan.seed + SPLITS.index(split)


def build_split(plan: DataPlan, folder: str, split: str) -> dict[str, str]:
    """Synthetic videos of one split and their prepared datasets (cached); returns the synthetic paths plus
    `narration`, `livechat` (and `coin` for train and test)."""
    from ..data_scripts import prepare_coin, prepare_ego4d_goalstep_livechat, prepare_ego4d_narration, synthetic

    held_out = split != "train"
    num_videos = {"train": plan.train_videos, "val": plan.val_videos, "test": plan.test_videos}[split]
    num_coin = {"train": plan.coin_train_videos, "val": 0, "test": plan.coin_test_videos}[split]
    check_split_settings(plan, folder, split)
    raw = os.path.join(folder, "synthetic")
    if not os.path.exists(raw):
        synthetic.generate_dataset(
            raw, num_videos=num_videos, seconds=plan.seconds, fps=2 * FPS, resolution=plan.resolution,
            seed=split_seed(plan, split), num_coin_videos=num_coin, difficulty=1, event_interval=plan.event_interval,
            # held-out splits put every narration stream in `val` and every COIN video in `testing`
            val_fraction=float(held_out), test_fraction=float(held_out),
            frame_captions=captions_made(plan, split),
            question_rate=QUESTION_RATE if held_out else plan.question_rate,
        )  # fmt: skip
    paths = synthetic.dataset_paths(os.path.abspath(raw))
    paths["narration"] = os.path.join(folder, "narration")
    if not os.path.exists(paths["narration"]):
        prepare_ego4d_narration.main(
            ["--annotation-dir", paths["ego4d_annotations"], "--video-root", paths["ego4d_videos"],
             "--output-dir", paths["narration"], "--variants", "raw", "--fps", str(FPS), *max_frames(plan, split)]
        )  # fmt: skip
    paths["livechat"] = os.path.join(folder, "livechat")
    if not os.path.exists(paths["livechat"]):
        prepare_ego4d_goalstep_livechat.main(
            ["--annotation-file", paths["livechat_json"],
             "--video-root", paths["ego4d_videos"], "--output-dir", paths["livechat"], "--fps", str(FPS),
             *max_frames(plan, split)]
        )  # fmt: skip
    if split == "train" and plan.quiet_videos:
        paths["quiet"] = render_quiet(plan, os.path.join(folder, f"quiet-{plan.quiet_videos}"))
    if num_coin:
        paths["coin"] = os.path.join(folder, "coin")
        if not os.path.exists(paths["coin"]):
            prepare_coin.main(
                ["--coin-json", paths["coin_json"], "--video-root", paths["coin_videos"], "--output-dir",
                 paths["coin"], "--benchmarks", "step", "next", "task", "--fps", str(FPS)]
            )  # fmt: skip
    return paths


def split_settings(plan: DataPlan, split: str) -> dict:
    """The settings of `plan` that shape the data of `split`, under their `--set` names."""
    names = ["seed", "seconds", "resolution", "event_interval", f"{split}_videos"]
    names += [] if split == "val" else [f"coin_{split}_videos"]
    names += ["question_rate", "max_stream_frames"] if split == "train" else []
    settings = {f"data.{name}": getattr(plan, name) for name in names}
    if split == "train":  # the captions the warm-up reads: none where the plan brings its own tower
        settings["data.frame_captions"] = captions_made(plan, split)
    return settings


def captions_made(plan: DataPlan, split: str) -> int:
    """How many captioned scenes `split` is made with for the tower's warm-up: only the training split has them, and
    only when the plan warms its own tower up (no `tower`)."""
    return plan.frame_captions if split == "train" and not plan.tower else 0


def check_split_settings(plan: DataPlan, folder: str, split: str) -> None:
    """Record in `folder` the settings its data is made with (`SPLIT_SETTINGS`), or check them against the record: a
    stage whose output exists is reused, so a plan that changed one of them would silently train on the old data.
    A folder made before the record existed is taken as it is, and recorded."""
    settings = split_settings(plan, split)
    path = os.path.join(folder, SPLIT_SETTINGS)
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        write_text_atomically(path, json.dumps(settings, indent=1))
        return
    made_with = read_json(path, "record of the split's settings")
    for name, value in settings.items():
        if made_with.get(name, value) != value:
            raise UserError(
                f"{folder}: its data was made with {name}={made_with[name]}, not {value}; use another --work-dir"
            )


def render_quiet(plan: DataPlan, folder: str) -> str:
    """`plan.quiet_videos` training videos in which nothing happens, and their narration streams (`QUIET_ROWS`, the
    prepared datasets' columns; `quiet_dataset` reads them): every other one the world's drifting background with no shape (`quiet-empty-*`),
    the others black (`quiet-black-*`); the narration instruction, then silence learned on every frame but the last
    (whose label would be "speak"). Cached: written into a temporary folder that is renamed when complete."""
    from ..data_scripts._stream import message, stream, stream_row
    from ..data_scripts.prepare_ego4d_narration import RAW_INSTRUCTION
    from .counterfactuals import render, render_black

    if os.path.exists(folder):
        return folder
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    num_frames = round(plan.seconds * FPS)
    first_seed = split_seed(plan, "train") * 100_000  # backgrounds of their own (the counterfactuals' are 5000 on)
    rows = []
    for index in range(plan.quiet_videos):
        uid = f"quiet-{('empty', 'black')[index % 2]}-{index:04d}"
        path = os.path.join(partial, f"{uid}.mp4")
        if index % 2:
            render_black(path, plan.seconds, plan.resolution, fps=2 * FPS)
        else:
            render(path, [], plan.seconds, first_seed + index, plan.resolution, fps=2 * FPS)
        conversation = [message("user", RAW_INSTRUCTION, 0.0), stream(num_frames, num_frames - 1, FPS, num_frames - 1)]
        rows.append(stream_row(uid, f"{uid}.mp4", FPS, num_frames, conversation, 0))
    with open(os.path.join(partial, QUIET_ROWS), "w") as f:
        json.dump(rows, f)
    os.rename(partial, folder)
    return folder


def quiet_dataset(folder: str):
    """The narration streams that `render_quiet` wrote into `folder`, as a dataset of the prepared datasets' columns."""
    from datasets import Dataset

    from ..data_scripts._hub import conversation_features

    rows = read_json(os.path.join(folder, QUIET_ROWS), "quiet streams")
    return Dataset.from_list(rows, features=conversation_features())


def max_frames(plan: DataPlan, split: str) -> list[str]:
    """The prepare scripts' option that cuts training streams (held-out streams stay whole: every plan is measured
    on the same streams)."""
    return ["--max-num-frames", str(plan.max_stream_frames)] if plan.max_stream_frames and split == "train" else []


def warm_up_tower(plan: DataPlan, captions: str, output_dir: str) -> str:
    """The study's one vision tower (`recipes.vision_warmup`), cached; returns its folder."""
    if os.path.exists(output_dir):
        return output_dir
    from transformers import TrainingArguments

    from .vision_warmup import WarmupArguments, warmup

    arguments = WarmupArguments(
        data=captions, image_size=plan.resolution, patch_size=plan.tower_patch_size,
        hidden_size=plan.tower_hidden_size, num_hidden_layers=plan.tower_layers,
    )  # fmt: skip
    warmup(
        arguments,
        TrainingArguments(
            output_dir=output_dir, num_train_epochs=plan.warmup_epochs,
            per_device_train_batch_size=plan.warmup_batch_size, learning_rate=plan.warmup_learning_rate,
            lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0, logging_steps=50, save_strategy="no",
            report_to="none", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,  # the Trainer's seed, 42
        ),
    )  # fmt: skip
    return output_dir


def precompute_split(tower_dir: str, videos: list[str], output_dir: str, grid: int) -> None:
    """Frame features of `videos` with the study's tower (the model's own preprocessing, pooled to 1 + grid x grid
    tokens), in float32."""
    from ..data_scripts.precompute_features import load_encoder, precompute_features
    from .vision_warmup import VISION_TOWER

    encoder = load_encoder(os.path.join(tower_dir, VISION_TOWER), (grid, grid))
    precompute_features(videos, output_dir, lambda: encoder, fps=FPS, dtype="float32", progress=False)


def features_folder(grid: int) -> str:
    """Where a work folder keeps the features of a frame grid (the original's 3x3 in `features`, as it always did)."""
    return "features" if grid == 3 else f"features_1+{grid}x{grid}"


@dataclass
class SharedData:
    """Where the shared stage put things: per split the synthetic paths and datasets, the tower, the features."""

    splits: dict[str, dict[str, str]]
    tower: str
    features: dict[str, str]  # split -> folder of {video_uid}.safetensors (narration and COIN videos)


def prepare_shared(plan: DataPlan, work_dir: str) -> SharedData:
    """Build (or find) the data, the warmed-up tower and the features of every split."""
    import glob

    if plan.tower and not os.path.exists(os.path.join(plan.tower, "config.json")):  # before any data is made
        raise UserError(f"--set data.tower={plan.tower}: no warmed-up vision tower there (no config.json)")
    os.makedirs(work_dir, exist_ok=True)
    splits = {split: build_split(plan, os.path.join(work_dir, split), split) for split in SPLITS}
    if plan.tower:
        tower = os.path.abspath(plan.tower)
    else:
        tower = warm_up_tower(plan, splits["train"]["frame_captions"], os.path.join(work_dir, "tower"))
    features = {}
    for split, paths in splits.items():
        features[split] = os.path.join(work_dir, features_folder(plan.frame_grid), split)
        videos = sorted(glob.glob(os.path.join(paths["ego4d_videos"], "*.mp4")))
        videos += sorted(glob.glob(os.path.join(paths["coin_videos"], "*.mp4")))
        if "quiet" in paths:
            videos += sorted(glob.glob(os.path.join(paths["quiet"], "*.mp4")))
        precompute_split(tower, videos, features[split], plan.frame_grid)
    return SharedData(splits, tower, features)
