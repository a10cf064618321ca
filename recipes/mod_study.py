"""Does Mixture-of-Depths keep a streaming model's quality at a fraction of its compute? The paper's claim, measured.

    python -m videollm_mod.recipes.mod_study                          # the whole grid, resumable (hours on 2 CPUs)
    python -m videollm_mod.recipes.mod_study --variants dense mod --seeds 0 1 2
    python -m videollm_mod.recipes.mod_study --report                 # table and plots from the results so far
    python -m videollm_mod.recipes.mod_study --quick --work-dir /tmp/q --results-dir /tmp/q/results   # smoke test

Every variant (`VARIANTS`) is the same streaming model (VideoLLM-online's dense decoder, or VideoLLM-MoD's routing in
some of its layers) trained with the same data, steps and seeds on the same frame features of one warmed-up vision
tower (`recipes.study_data`), then measured on the same held-out streams:

- teacher-forced (`recipes.evaluate`, threshold 0 as the original): LM-PPL, TimeDiff, Fluency, LM-Correctness;
- free-running (`recipes.free_running`, the demo's threshold, the model conditioned on its own replies): event
  precision / recall / F1, content accuracy and lag, beside the same model fed black frames (`blind`);
- live chats, free-running: the events said and the answers to questions about what is on screen (which shapes, how
  many, which colour, what just happened), beside `blind`;
- COIN-style step / next / task accuracy by generation (`recipes.answer_accuracy`) on synthetic task videos
  (`--set data.coin_train_videos=200 data.coin_test_videos=50`; none in the default plan, see `DataPlan`).

Its cost is measured once per variant, side by side with the dense model in one run (`recipes.study_costs`).
Each (variant, seed) writes `{results_dir}/runs/{variant}-seed{seed}.json` when it finishes and each variant
`{results_dir}/costs/{variant}.json`; a run whose file exists is skipped, so the grid can be stopped and resumed, and
several workers started with the same command share it (a run is claimed by a lock file; `--set threads=1` each:
on 2 cores, two one-thread workers train about twice as fast as one two-thread process).
`--report` aggregates them (mean and spread over seeds) into `{results_dir}/RESULTS.md` and PNG plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from ..files import read_json
from .study_data import FPS, DataPlan, SharedData, prepare_shared

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """A decoder layout of the study: `routing(num_layers)` gives the config's Mixture-of-Depths fields."""

    name: str
    description: str
    mod_layers: str  # "none" | "odd" | "even" | "all" | "deep" (the deeper half) | "from_half" (EarlyExit)
    keep_ratio: float = 0.2
    selection: str = "router"
    skip_intervals: bool = False  # the official `dropall` layers (LayerSkip, EarlyExit)
    capacity_warmup: float = 0.0  # share of the steps annealing from every token to keep_ratio (capacity_warmup.py)

    def routing(self, num_layers: int) -> dict:
        layers = {
            "none": [],
            "odd": list(range(1, num_layers, 2)),
            "even": list(range(0, num_layers, 2)),
            "all": list(range(num_layers)),
            "deep": list(range(num_layers // 2, num_layers)),
            "from_half": list(range(num_layers // 2, num_layers)),
        }[self.mod_layers]
        return {"mod_layers": layers, "mod_keep_ratio": self.keep_ratio, "mod_selection": self.selection,
                "mod_skip_interval_tokens": self.skip_intervals}  # fmt: skip


VARIANTS = {
    v.name: v
    for v in (
        Variant("dense", "VideoLLM-online: every token in every layer", "none"),
        Variant("mod", "VideoLLM-MoD: interleaved (odd) layers keep the top 20 % of each frame", "odd"),
        Variant("mod_all", "MoD in every layer, r = 0.2", "all"),
        Variant("mod_deep", "MoD in the deeper half of the layers, r = 0.2", "deep"),
        Variant("mod_r0.1", "interleaved, r = 0.1 (k = 1 of 10)", "odd", keep_ratio=0.1),
        Variant("mod_r0.3", "interleaved, r = 0.3", "odd", keep_ratio=0.3),
        Variant("mod_r0.5", "interleaved, r = 0.5", "odd", keep_ratio=0.5),
        Variant("mod_random", "interleaved, r = 0.2, random tokens of each frame", "odd", selection="random"),
        Variant("mod_uniform", "interleaved, r = 0.2, evenly spaced tokens of each frame", "odd", selection="uniform"),
        Variant(
            "mod_warmup",
            "interleaved, r = 0.2, capacity annealed from every token to r over the first 20 % of the steps",
            "odd",
            capacity_warmup=0.2,
        ),
        Variant("mod_even", "interleaved on the even layers, r = 0.2: the last layer sees every token", "even"),
        Variant(
            "layerskip", "LayerSkip: odd layers skip every vision and interval token", "odd", 0.0, "uniform", True
        ),
        Variant(
            "earlyexit",
            "EarlyExit: vision and interval tokens skip the deeper half",
            "from_half",
            0.0,
            "uniform",
            True,
        ),  # fmt: skip
    )
}


@dataclass
class StudyPlan:
    """Everything a run depends on besides its variant and seed (written into every result file)."""

    data: DataPlan = field(default_factory=DataPlan)
    lm_family: str = "llama"  # the decoder family (`TEXT_MODEL_TYPES`)
    lm_layers: int = 4
    lm_hidden: int = 128
    lm_intermediate: int | None = None  # default 2 * hidden + 5 (`presets.tiny_config`)
    vocab_size: int = 1024  # every word of the synthetic world one token (at 320: "Assistant" was 7, "appear" 2)
    epochs: float = 10.0  # ~1,130 steps of batch 8: a model learns to look at the frames after ~500 to 750
    learning_rate: float = 2e-3
    weight_decay: float = 0.0  # AdamW's (tried for the demo, to train longer without over-fitting the narration)
    batch_size: int = 8
    reply_noise: float = 0.0  # the collator's: replies swapped for another of the stream, not learned
    spurious_replies: float = 0.0  # the collator's: replies not due inserted after silent frames, not learned
    livechat_share: float = 1 / 3  # of the training videos, seen as live chats with questions (the others narrated)
    unprompted_share: float = 0.0  # of the narration streams, without their instruction (the demo's: 0.67)
    lead_in_frames: int = 0  # an unprompted narration stream starts up to this many frames before its first narration
    question_share: float = 0.0  # of the narration streams, with their video's chat questions (tried for the demo)
    scene_questions: int = 0  # per training video, short clips with one question about the screen (tried for the demo)
    threads: int = 2
    eval_split: str = "test"
    max_eval_rows: int | None = None
    cost_steps: int = 6  # timed training steps per model in the cost measurement (after one warm-up)
    kv_frames: int = 400  # frames streamed for the KV-cache curve
    kv_budget_bytes: int = 2**20  # the byte budget at which frames held are compared (~45 frames of the dense model)
    # synthetic batches the costs are also measured on: a narration after every n-th frame (`study_costs`)
    cost_layouts: tuple[int, ...] = (1, 2, 4, 8, 16)

    @classmethod
    def quick(cls) -> StudyPlan:
        """A smoke version for the tests: a few short streams, a tiny warm-up, one epoch."""
        data = DataPlan(train_videos=6, val_videos=2, test_videos=2, seconds=8.0, coin_train_videos=5,
                        coin_test_videos=5, frame_captions=128, warmup_epochs=1.0, warmup_batch_size=32,
                        tower_hidden_size=32, tower_layers=1)  # fmt: skip
        return cls(data=data, lm_hidden=32, epochs=1.0, batch_size=4, vocab_size=200, max_eval_rows=2, cost_steps=2,
                   kv_frames=40, kv_budget_bytes=2**16, cost_layouts=(4,))  # fmt: skip

    def to_dict(self) -> dict:
        """The plan as its JSON reads back (tuples as lists), so that a kept record compares equal."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def recipe_of(plan: dict) -> dict:
    """The settings of a plan (`StudyPlan.to_dict`) that make its models: all but the thread count, which changes the
    speed of a run, not what it trains (a kept run is reused for the same recipe). A setting the plan lacks takes its
    default: a run kept before the setting existed was trained as its default trains."""
    defaults = StudyPlan().to_dict()
    whole = {**defaults, **plan, "data": {**defaults["data"], **plan.get("data", {})}}
    return {key: value for key, value in whole.items() if key != "threads"}


# ---------------------------------------------------------------------------------------------------------------- model


def training_texts(datasets) -> list[str]:
    """Every text of the training rows (the tokenizer is trained on them, the same for every variant)."""
    return sorted({m["content"] for d in datasets for row in d for m in row["conversation"] if m["content"]})


def build_model(plan: StudyPlan, variant: Variant, texts: list[str], tower: str, seed: int):
    """A fresh model of `variant` (seeded) with the study's tower, and its processor."""
    from modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
    from modeling_videollm_mod.processing_videollm_mod import SYSTEM_PROMPT

    from ..presets import tiny_config
    from ..tokenizer_tools import build_stream_tokenizer, stream_token_ids
    from .vision_warmup import load_vision_tower

    tokenizer = build_stream_tokenizer([*texts, SYSTEM_PROMPT], vocab_size=plan.vocab_size)
    data = plan.data
    config = tiny_config(
        num_hidden_layers=plan.lm_layers, hidden_size=plan.lm_hidden, intermediate_size=plan.lm_intermediate,
        text_model_type=plan.lm_family, vocab_size=len(tokenizer), image_size=data.resolution, **stream_token_ids(tokenizer),
        frame_token_pooled=[data.frame_grid] * 2, **variant.routing(plan.lm_layers),
    )  # fmt: skip
    vision = config.vision_config
    vision.hidden_size, vision.num_hidden_layers = data.tower_hidden_size, data.tower_layers
    vision.intermediate_size, vision.patch_size = 2 * data.tower_hidden_size + 5, data.tower_patch_size
    torch.manual_seed(seed)
    model = VideoLLMMoDForCausalLM(config)
    load_vision_tower(model, tower)
    processor = VideoLLMMoDProcessor(
        image_processor=VideoLLMMoDFrameProcessor(size=data.resolution, fps=FPS),
        tokenizer=tokenizer,
        frame_num_tokens=config.frame_num_tokens,
    )
    return model, processor


# ---------------------------------------------------------------------------------------------------------------- data


def load_split(shared: SharedData, split: str) -> dict:
    """`{"narration": Dataset, "livechat": Dataset, "coin": {benchmark: Dataset}}` of a split (COIN only where the
    split has it), and `"quiet"` (streams in which nothing happens, `study_data.render_quiet`) where it has them."""
    from ..data_scripts._hub import load_prepared_dataset
    from .study_data import quiet_dataset

    paths = shared.splits[split]
    hf_split = "train" if split == "train" else "val"
    out = {
        "narration": load_prepared_dataset(paths["narration"], "raw")[hf_split],
        "livechat": load_prepared_dataset(paths["livechat"])["train"],  # the file has one split, of its videos
        "coin": {},
    }
    if "quiet" in paths:
        out["quiet"] = quiet_dataset(paths["quiet"])
    if split == "train":  # what happens in each video, when (`scene_questions` asks about it)
        out["events"] = read_json(paths["events"], "synthetic events")
    if "coin" in paths:
        for benchmark in ("step", "next", "task"):
            out["coin"][benchmark] = load_prepared_dataset(paths["coin"], benchmark)[
                "train" if split == "train" else "test"
            ]
    return out


def video_draw(video_uid: str, count: int, salt: str = "") -> int:
    """A fixed draw from `range(count)` for a video, by id (`salt` makes another draw, independent)."""
    return int(hashlib.sha256((salt + video_uid).encode()).hexdigest(), 16) % count


def in_share(video_uid: str, share: float, salt: str = "") -> bool:
    """Whether a video belongs to a fixed share of the videos, by id (`salt` draws another share, independent)."""
    return video_draw(video_uid, 1000, salt) < share * 1000


def chat_video(video_uid: str, share: float) -> bool:
    """Whether a training video is seen as a live chat (else as narration): a fixed share of the videos, by id."""
    return in_share(video_uid, share)


def unprompted(row: dict, lead_in_frames: int = 0) -> dict:
    """A narration row without its instruction: a stream that opens with no turn, as `narrate` and `stream_generate`
    run a video when no query is given. It starts up to `lead_in_frames` frames (drawn by video, uniformly from 0)
    before its first narration's frame; a stream that starts earlier learns every frame of its first stream: silence
    until the first narration, speech on it. Why: a narration stream starts on its first narration's frame, whereas
    `narrate` starts on the video's first frame; without the lead-in a model sees a first reply after several frames
    only in live chats, and may narrate a video given with no instruction in the live chats' words
    (`benchmarks/narration_voice.py`)."""
    from modeling_videollm_mod.processing_videollm_mod import as_messages

    conversation = [m for m in as_messages(row["conversation"]) if m["role"] != "user"]
    lead = min(video_draw(row["video_uid"], lead_in_frames + 1, "lead-in"), row["start_frame"])
    if not lead:
        return {"conversation": conversation}
    frames = conversation[0]["num_frames"] + lead  # still ending on the first narration's frame, its `time`
    conversation[0] = {**conversation[0], "num_frames": frames, "learn": frames}
    return {"conversation": conversation, "start_frame": row["start_frame"] - lead}


def training_rows(
    train: dict,
    livechat_share: float,
    unprompted_share: float = 0.0,
    question_share: float = 0.0,
    tokens_per_frame: int = 11,
    lead_in_frames: int = 0,
    scene_questions: int = 0,
):
    """Each training video once, as a narration stream or (`livechat_share` of them) a live chat with questions,
    the quiet streams (narration streams in which nothing happens) and the COIN questions, in one dataset (the
    columns the collator reads), with a `length` column (about the row's tokens) by which batches are grouped: a short
    COIN question padded to a minute-long stream would cost as much as the stream. `unprompted_share` of the
    narration streams (the quiet ones too) lose their instruction and may start earlier (`unprompted`);
    `question_share` of them (drawn independently) get the questions of their video's live chat
    (`narration_questions`). `scene_questions` more rows per training video each ask one question about a moment of
    it (`scene_questions`)."""
    from datasets import Dataset, concatenate_datasets

    from .narration_questions import chat_questions, with_questions

    columns = ["video_uid", "video", "fps", "start_frame", "stop_frame", "conversation"]
    narration = train["narration"].filter(lambda row: not chat_video(row["video_uid"], livechat_share))
    if "quiet" in train:
        narration = concatenate_datasets([narration.select_columns(columns), train["quiet"].select_columns(columns)])
    if unprompted_share:
        narration = narration.map(
            lambda row: (
                unprompted(row, lead_in_frames) if in_share(row["video_uid"], unprompted_share, "unprompted") else {}
            )
        )
    if question_share:
        asked = {row["video_uid"]: chat_questions(row["conversation"]) for row in train["livechat"]}
        narration = narration.map(
            lambda row: (
                {"conversation": with_questions(row["conversation"], asked.get(row["video_uid"], []), row["fps"])}
                if in_share(row["video_uid"], question_share, "questions")
                else {}
            )
        )
    livechat = train["livechat"].filter(lambda row: chat_video(row["video_uid"], livechat_share))
    parts = [narration, livechat, *train["coin"].values()]
    if scene_questions:
        from ..data_scripts._hub import conversation_features
        from .scene_questions import scene_rows

        asked = scene_rows(train["narration"], train["events"], scene_questions)
        parts.append(Dataset.from_list(asked, features=conversation_features()))
    rows = concatenate_datasets([part.select_columns(columns) for part in parts])
    return rows.map(lambda row: {"length": approximate_tokens(row, tokens_per_frame)})


def plan_rows(plan: StudyPlan, train: dict):
    """`training_rows` with `plan`'s shares: what every variant of the plan trains on (and its costs are measured on)."""
    tokens_per_frame = plan.data.frame_grid**2 + 2  # the pooled token, the grid, the interval
    return training_rows(train, plan.livechat_share, plan.unprompted_share, plan.question_share, tokens_per_frame,
                         plan.lead_in_frames, plan.scene_questions)  # fmt: skip


def approximate_tokens(row: dict, tokens_per_frame: int, chars_per_token: int = 4) -> int:
    from modeling_videollm_mod.processing_videollm_mod import as_messages

    text = sum(len(m["content"]) for m in as_messages(row["conversation"]))
    return (row["stop_frame"] - row["start_frame"]) * tokens_per_frame + text // chars_per_token


def first_rows(dataset, count: int | None):
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))


# ---------------------------------------------------------------------------------------------------------------- a run


def training_arguments(plan: StudyPlan, seed: int, output_dir: str):
    """The `SFTConfig` of every run of the plan: its schedule, on the CPU, batches grouped by length."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir, num_train_epochs=plan.epochs, per_device_train_batch_size=plan.batch_size,
        learning_rate=plan.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=plan.weight_decay,
        logging_steps=20, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
        activation_checkpointing=False, dataloader_num_workers=0, seed=seed, data_seed=seed, disable_tqdm=True,
        train_sampling_strategy="group_by_length", length_column_name="length",
    )  # fmt: skip


def train_variant(plan: StudyPlan, shared: SharedData, variant: Variant, seed: int, output_dir: str):
    """Train one (variant, seed) with the recipe's `SFTTrainer` on the shared features; returns the model, its
    processor and the training log."""
    from .sft import VideoSFTScriptArguments, build_trainer

    rows = plan_rows(plan, load_split(shared, "train"))
    model, processor = build_model(plan, variant, training_texts([rows]), shared.tower, seed)
    trainer = build_trainer(
        model,
        processor,
        rows,
        training_arguments(plan, seed, output_dir),
        VideoSFTScriptArguments(
            features_dir=shared.features["train"],
            reply_noise=plan.reply_noise,
            spurious_replies=plan.spurious_replies,
            mod_capacity_warmup=variant.capacity_warmup,
        ),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    # the thread count beside the seconds it gave (a kept run may be reused under another, `train_demo`)
    return model.eval(), processor, {"seconds": seconds, "threads": torch.get_num_threads(),
                                     "steps": trainer.state.global_step, "losses": losses, "rows": len(rows)}  # fmt: skip


@torch.no_grad()
def evaluate_variant(model, processor, plan: StudyPlan, shared: SharedData) -> dict:
    """Every quality measure of the study on the plan's evaluation split (see the module docstring)."""
    from .answer_accuracy import evaluate_answers
    from .evaluate import evaluate_streams
    from .free_running import evaluate_free_running

    split = load_split(shared, plan.eval_split)
    features = shared.features[plan.eval_split]
    narration = first_rows(split["narration"], plan.max_eval_rows)
    livechat = first_rows(split["livechat"], plan.max_eval_rows)
    results = {
        "teacher_forced": evaluate_streams(
            model, processor, narration, features_dir=features, threshold=0.0, baselines=True
        ),  # fmt: skip
        "free_running": evaluate_free_running(model, processor, narration, features_dir=features, baselines=True),
        # live chats: the events said free-running, and the answers to questions about what is on screen
        "livechat": evaluate_free_running(model, processor, livechat, features_dir=features, baselines=True),
    }
    results["coin"] = {
        benchmark: evaluate_answers(
            model, processor, first_rows(rows, plan.max_eval_rows), features_dir=features, baselines=True
        )  # fmt: skip
        for benchmark, rows in split["coin"].items()
    }
    return results


def run_path(results_dir: str, variant: str, seed: int) -> str:
    return os.path.join(results_dir, "runs", f"{variant}-seed{seed}.json")


def claim(path: str) -> bool:
    """Whether this process may produce `path`: it is not done, and no other live process has claimed it (a lock file
    beside it holds the claimant's pid; a dead claimant's lock is taken over). Several workers started with the same
    command thus share the grid."""
    if os.path.exists(path):
        return False
    lock = path + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    for _ in range(2):
        try:
            with open(lock, "x") as f:
                f.write(str(os.getpid()))
            return True
        except FileExistsError:
            try:
                os.kill(int(open(lock).read() or 0), 0)
                return False  # claimed by a live process
            except (ProcessLookupError, ValueError):
                os.remove(lock)  # its claimant died
    return False


def release(path: str) -> None:
    if os.path.exists(path + ".lock"):
        os.remove(path + ".lock")


def run_one(plan: StudyPlan, shared: SharedData, variant: Variant, seed: int, results_dir: str, work_dir: str,
            save_model: bool = False) -> dict:  # fmt: skip
    """Train, evaluate and write one (variant, seed) result file (through a temporary name)."""
    from ..files import write_text_atomically

    run_dir = os.path.join(work_dir, "runs", f"{variant.name}-seed{seed}")
    model, processor, training = train_variant(plan, shared, variant, seed, run_dir)
    if save_model:
        model.save_pretrained(os.path.join(run_dir, "model"))
        processor.save_pretrained(os.path.join(run_dir, "model"))
    start = time.perf_counter()
    quality = evaluate_variant(model, processor, plan, shared)
    result = {
        "variant": variant.name,
        "description": variant.description,
        "seed": seed,
        "config": {k: getattr(model.config, k) for k in ("mod_layers", "mod_keep_ratio", "mod_selection",
                                                           "mod_skip_interval_tokens", "trained_stream_length")}
                  | {"capacity_warmup": variant.capacity_warmup},
        "plan": plan.to_dict(),
        "training": training,
        "evaluation_seconds": time.perf_counter() - start,
        "quality": quality,
    }  # fmt: skip
    os.makedirs(os.path.dirname(run_path(results_dir, variant.name, seed)), exist_ok=True)
    write_text_atomically(run_path(results_dir, variant.name, seed), json.dumps(result, indent=1) + "\n")
    return result


# ---------------------------------------------------------------------------------------------------------------- CLI


def parse_settings(pairs: list[str]) -> dict:
    """`--set key=value ...` -> overrides of `StudyPlan` (`data.key` for `DataPlan`), typed like the field."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair}: expected key=value")
        out[key] = value
    return out


def int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def apply_settings(plan: StudyPlan, settings: dict) -> StudyPlan:
    for key, value in settings.items():
        target, name = (plan.data, key[5:]) if key.startswith("data.") else (plan, key)
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields:
            raise ValueError(f"--set {key}: no such setting (settings: {sorted(fields)})")
        current = getattr(target, name)
        kind = type(current) if current is not None else (int if "int" in str(fields[name].type) else str)
        parse, expected = (int_tuple, "comma-separated list of integers") if kind is tuple else (kind, kind.__name__)
        try:
            setattr(target, name, None if value == "None" else parse(value))
        except ValueError:
            raise ValueError(f"--set {key}={value}: expected a {expected}") from None
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videollm_mod.recipes.mod_study", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work-dir", default="runs/mod_study", help="data, tower, features, checkpoints (cached)")
    parser.add_argument("--results-dir", default="benchmarks/mod_study", help="result files (committed)")
    parser.add_argument("--quick", action="store_true", help="a smoke version: tiny data, tower and model")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a StudyPlan setting")
    parser.add_argument("--save-models", action="store_true", help="keep each run's model in the work folder")
    parser.add_argument("--no-costs", action="store_true", help="skip the per-variant cost measurements")
    parser.add_argument("--report", action="store_true", help="only aggregate the result files so far")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..errors import UserError

    try:
        if args.report:
            from .study_report import write_report

            print(write_report(args.results_dir))
            return 0
        plan = apply_settings(StudyPlan.quick() if args.quick else StudyPlan(), parse_settings(args.set))
    except (UserError, ValueError) as error:  # the user's settings or folders: one line
        print(f"error: {error}", file=sys.stderr)
        return 1
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    try:
        run_grid(plan, args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:  # a caller's later work (a test's bitwise comparison) keeps its own thread count
        torch.set_num_threads(previous_threads)
    return 0


def run_grid(plan: StudyPlan, args: argparse.Namespace) -> None:
    shared = prepare_shared(plan.data, args.work_dir)
    from .study_costs import cost_path, measure_variant_costs

    for name in args.variants:
        for seed in args.seeds:
            path = run_path(args.results_dir, name, seed)
            if not claim(path):
                logger.info("%s seed %d: done already, or another worker's", name, seed)
                continue
            try:
                logger.info("%s seed %d: training", name, seed)
                result = run_one(plan, shared, VARIANTS[name], seed, args.results_dir, args.work_dir, args.save_models)
            finally:
                release(path)
            free = result["quality"]["free_running"]["model"]
            logger.info("%s seed %d: free-running F1 %.3f, content accuracy %.3f", name, seed, free["f1"],
                        free["content_accuracy"])  # fmt: skip
        if not args.no_costs and claim(cost_path(args.results_dir, name)):
            try:
                measure_variant_costs(plan, shared, VARIANTS[name], args.results_dir)
            finally:
                release(cost_path(args.results_dir, name))


if __name__ == "__main__":
    sys.exit(main())
