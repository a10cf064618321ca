"""Reproduce the shipped demo model: the MoD study's recipe (`recipes.mod_study`) for its best variant, `mod_even`
(VideoLLM-MoD's routing, r = 0.2, on the even layers), with a Qwen3 decoder and the demo's own settings
(`DEMO_SETTINGS`), packaged as the demo with its validation figures.

    python -m videollm_mod.recipes.train_demo --work-dir runs/demo --output-dir videollm_mod/demo
    # as the shipped demo was made: the study's data and tower (see benchmarks/README.md)
    python -m videollm_mod.recipes.train_demo --work-dir runs/ms900g6 --set data.tower=runs/study/tower threads=2

1. The study's shared stage (`recipes.study_data`): synthetic videos of coloured shapes whose events (shape x colour x
   action) come at irregular times, as Ego4D-style narration streams and live chats with questions about what is on
   screen; a SigLIP warmed up on captioned scenes of the same world (about an hour from scratch), frozen; frame
   features pre-computed with it.
2. The study's training (`mod_study.train_variant`: a 4 x 128 decoder, MoD with r = 0.2 and learned routers, the
   recipe's `SFTTrainer`) of `--variant` and `--seed`, on the study's plan with `DEMO_SETTINGS`: 37 tokens per frame
   (the pooled token and a 6 x 6 grid; the study: 3 x 3), half of the training videos as live chats (the study: a
   third), 30 epochs (the study: 10), each learned reply swapped, with probability 0.15, for another of its stream
   and then not learned (`reply_noise`: the model meets wrong replies of its own, as it makes them running free),
   two thirds of the narration streams without their instruction, as `narrate` and `stream_generate` run a video
   when no query is given (trained only with it, a model narrates such streams in the live chats' words and speaks
   about 1.5 times per event), each of those starting up to 8 frames before its first
   narration, as `narrate` starts a video (else a model that first speaks a few frames in takes the live chats' voice),
   half of the narration streams with their video's live-chat questions (else a question asked in a narration stream
   may get a narration sentence), and 90 quiet streams, empty scenes and black videos narrated with silence (without
   them a model talks over a video in which nothing happens). The model is kept in
   `{work_dir}/runs/demo-{variant}-seed{seed}` with its plan and reused from there when the plan is the same
   (but for the thread count).
3. The folder (weights, config, processor, tokenizer, model card; copied from the kept run as training saved it; the
   demo ships as data, so the code files that `save_pretrained` writes are left out) with `demo_metrics.json`: every
   quality measure of the study on the validation split (`mod_study.evaluate_variant`), beside its baselines. The
   benchmark (`benchmarks/demo_quality.py`) scores the demo on seeds that neither uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

import torch

from ..errors import UserError
from ..files import read_json

logger = logging.getLogger(__name__)

VARIANT = "mod_even"  # the study's best MoD variant (benchmarks/README.md); "mod" is the paper's odd layers
# Over the study's plan; `--set` overrides them. What each bought is in recipes/README.md (demo model).
DEMO_SETTINGS = {"lm_family": "qwen3", "livechat_share": "0.5", "unprompted_share": "0.67", "epochs": "30",
                 "data.frame_grid": "6", "data.quiet_videos": "90", "lead_in_frames": "8", "question_share": "0.5",
                 "reply_noise": "0.15"}  # fmt: skip
# of seeds 0, 1 and 2 of an earlier demo recipe, the best answers on the validation streams; the shipped demo's recipe
# was trained with it alone (every run: recipes/README.md)
DEMO_SEED = 2


def demo_eval_results(metrics: dict) -> list:
    """The validation figures of `demo_metrics.json` as the card's `EvalResult`s: the model and, for each figure, the
    baseline that shows what it means (the same model fed black frames; never speaking)."""
    from huggingface_hub import EvalResult

    quality = metrics["validation"]
    free, forced, chat = quality["free_running"], quality["teacher_forced"], quality["livechat"]
    figures = [
        ("free-running event F1", free["model"]["f1"]),
        ("free-running event F1, blind (black frames)", free["blind"]["f1"]),
        ("free-running content accuracy", free["model"]["content_accuracy"]),
        ("TimeDiff (s, teacher-forced)", forced["model"]["time_diff"]),
        ("TimeDiff (s), never speaking", forced["never_speak"]["time_diff"]),
        ("answers to questions about the screen", chat["model"]["answer_accuracy"]),
        ("answers to questions about the screen, blind (black frames)", chat["blind"]["answer_accuracy"]),
    ]
    dataset = f"synthetic streams, validation ({metrics['val_rows']} streams)"
    return [
        EvalResult(
            task_type="video-text-to-text",
            dataset_type="synthetic",
            dataset_name=dataset,
            metric_type=name,
            metric_value=round(value, 3),
        )  # fmt: skip
        for name, value in figures
    ]


def write_demo_card(folder: str, config, metrics: dict | None = None) -> None:
    """The demo's model card: trained from scratch here (no base model), under the project's licence, with the
    validation figures of `metrics` (`demo_metrics.json`) when given."""
    from videollm_mod.conversion.model_card import base_card_data, render_model_card

    data = base_card_data(
        license="apache-2.0",
        training_data="Trained from scratch (no base model) by `python -m videollm_mod.recipes.train_demo` (the MoD "
        "study's recipe) on synthetic narration streams and live chats about coloured shapes rendered by `videollm-mod "
        "data synthetic`, after a SigLIP warm-up on captioned random scenes of the same world: a demonstration of the "
        "pipeline, not a model of real video.",
    )
    if metrics is not None:
        data.eval_results, data.model_name = demo_eval_results(metrics), "videollm-mod-demo"
    card = render_model_card(data, model_id="videollm-mod-demo", config=config, eval_results=data.eval_results)
    card.save(os.path.join(folder, "README.md"))


def trained_model(plan, shared, variant: str, seed: int, work_dir: str):
    """The demo's training of the study's `variant` with `seed` on `plan`: trained now and kept in the work folder
    with its plan, or the one kept there already for the same recipe (`mod_study.recipe_of`: any thread count).
    Returns the model, its processor, the training log and the folder the model was saved to."""
    from modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDProcessor

    from .mod_study import VARIANTS, recipe_of, train_variant

    run_dir = os.path.join(work_dir, "runs", f"demo-{variant}-seed{seed}")
    model_dir, record = os.path.join(run_dir, "model"), os.path.join(run_dir, "training.json")
    kept = read_json(record, "training record") if os.path.exists(record) else None
    if kept is not None and recipe_of(kept["plan"]) == recipe_of(plan.to_dict()):
        logger.info("using the model kept in %s", model_dir)
        model = VideoLLMMoDForCausalLM.from_pretrained(model_dir).eval()
        return model, VideoLLMMoDProcessor.from_pretrained(model_dir), kept["training"], model_dir
    model, processor, training = train_variant(plan, shared, VARIANTS[variant], seed, run_dir)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    with open(record, "w") as f:  # last: a stopped run leaves no record, and is trained again
        json.dump({"plan": plan.to_dict(), "training": training}, f, indent=1)
    return model, processor, training, model_dir


def main(argv: list[str] | None = None) -> int:
    from .mod_study import VARIANTS

    parser = argparse.ArgumentParser(prog="python -m videollm_mod.recipes.train_demo",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--work-dir", default="runs/demo", help="data, tower, features, the trained model (cached)")
    parser.add_argument("--output-dir", default="videollm_mod/demo")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--variant", default=VARIANT, choices=list(VARIANTS), help="the MoD study's variant to train")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override a setting of the study's plan (`mod_study.StudyPlan`), e.g. lm_family=qwen3")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="the study's smoke plan: tiny data, tower and model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from .mod_study import StudyPlan, apply_settings, evaluate_variant, load_split, parse_settings
    from .study_data import prepare_shared

    try:
        demo_settings = {k: v for k, v in DEMO_SETTINGS.items() if not (args.quick and k == "epochs")}  # smoke: 1
        settings = {**demo_settings, **parse_settings(args.set)}
        plan = apply_settings(StudyPlan.quick() if args.quick else StudyPlan(), settings)
    except (UserError, ValueError) as error:  # the user's settings: one line
        print(f"error: {error}", file=sys.stderr)
        return 1
    plan.eval_split = "val"  # the demo's figures: the validation streams (the study's test streams stay its own)
    torch.set_num_threads(plan.threads)
    try:
        shared = prepare_shared(plan.data, args.work_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    model, processor, training, model_dir = trained_model(plan, shared, args.variant, args.seed, args.work_dir)

    start = time.perf_counter()
    validation = evaluate_variant(model, processor, plan, shared)
    metrics = {
        "variant": args.variant,
        "seed": args.seed,
        "plan": plan.to_dict(),
        "training": training,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "val_rows": len(load_split(shared, "val")["narration"]),
        "validation": validation,
        "evaluation_seconds": time.perf_counter() - start,
        "command": "python -m videollm_mod.recipes.train_demo " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    # the files as training saved them (a model loaded and saved again gains loading's keys, `dtype` and the
    # tokenizer's `is_local`); the demo ships as data: its code is the installed package
    shutil.copytree(model_dir, args.output_dir, ignore=shutil.ignore_patterns("*.py"), dirs_exist_ok=True)
    with open(os.path.join(args.output_dir, "demo_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    write_demo_card(args.output_dir, model.config, metrics)
    free = validation["free_running"]["model"]
    print(f"wrote the demo to {args.output_dir}: validation free-running F1 {free['f1']:.3f}, content accuracy "
          f"{free['content_accuracy']:.3f}, answers {validation['livechat']['model']['answer_accuracy']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
