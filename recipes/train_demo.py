"""Reproduce the shipped demo model from scratch: synthetic world -> vision warm-up -> narration SFT -> metrics.

    python -m videollm_mod.recipes.train_demo --work-dir runs/demo --output-dir videollm_mod/demo

1. Data (`data_scripts.synthetic`): shape videos whose events (shape x colour x action) come at irregular times, with
   Ego4D-style narrations; a training set (seed `--seed`) with (frame, caption) pairs of its videos, and a validation
   set from another seed (`--seed + 1`) for choices and the metrics written with the model. Both become narration
   streams at 2 fps (`data_scripts.prepare_ego4d_narration`). The benchmark (`benchmarks/demo_quality.py`) scores
   the model on seeds that neither uses.
2. Vision warm-up (`recipes.vision_warmup`): a small SigLIP learns the frames' captions with its own sigmoid loss.
3. A VideoLLM-MoD (Llama 4 x 128, the warm-up's SigLIP 2 x 128 at 48 px, 10 tokens per frame, MoD on the odd layers
   with r = 0.2, learned routers) gets the warm-up's vision tower, frozen; frame features are pre-computed with it
   (`data_scripts.precompute_features`, equal to the raw-frame path), and the rest is trained with the recipe's
   `SFTTrainer` (`recipes.sft.build_trainer`), as the original trains on pre-computed SigLIP features.
4. The folder (weights, config, processor, tokenizer, model card; the shipped demo is data, so the code files that
   `save_pretrained` writes are removed) is written with `demo_metrics.json`: the validation set's teacher-forced and
   free-running metrics against the baselines (`recipes.evaluate`, `recipes.free_running`).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from ..remote_code import remote_constant

logger = logging.getLogger(__name__)

FPS = 2.0  # frames per second of the narration streams
RESOLUTION = 48  # rendered frames are the vision tower's size: no resampling


def build_data(folder: str, num_videos: int, seconds: float, seed: int, held_out: bool, frame_captions: int = 0):
    """Synthetic videos + their narration dataset (cached in `folder`): split `train`, or `val` if `held_out`.
    Returns the synthetic paths + `dataset`."""
    from videollm_mod.data_scripts import prepare_ego4d_narration, synthetic

    raw = os.path.join(folder, "synthetic")
    paths = synthetic.dataset_paths(raw)
    if not os.path.exists(raw):
        synthetic.generate_dataset(
            raw, num_videos=num_videos, seconds=seconds, fps=2 * FPS, resolution=RESOLUTION, seed=seed,
            num_coin_videos=0, difficulty=1, event_interval=2.5, val_fraction=float(held_out), test_fraction=0.0,
            frame_captions=frame_captions,
        )  # fmt: skip
    paths["dataset"] = os.path.join(folder, "narration")
    if not os.path.exists(paths["dataset"]):
        prepare_ego4d_narration.main(
            ["--annotation-dir", paths["ego4d_annotations"], "--video-root", paths["ego4d_videos"],
             "--output-dir", paths["dataset"], "--variants", "raw", "--fps", str(FPS)]
        )  # fmt: skip
    return paths


def build_model_and_processor(
    texts: list[str], hidden_size: int = 128, num_layers: int = 4, text_model_type: str = "llama"
):
    """A fresh demo-sized VideoLLM-MoD over a decoder of `text_model_type` and its processor (tokenizer trained on
    `texts`); the vision tower has the warm-up's default sizes (`vision_warmup.WarmupArguments`)."""
    from modeling_videollm_mod import VideoLLMMoDForCausalLM
    from modeling_videollm_mod.processing_videollm_mod import (
        SYSTEM_PROMPT,
        VideoLLMMoDFrameProcessor,
        VideoLLMMoDProcessor,
    )
    from videollm_mod.presets import tiny_config
    from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids

    tokenizer = build_stream_tokenizer([*texts, SYSTEM_PROMPT], vocab_size=320)
    config = tiny_config(
        num_hidden_layers=num_layers,
        hidden_size=hidden_size,
        text_model_type=text_model_type,
        vocab_size=len(tokenizer),
        image_size=RESOLUTION,
        **stream_token_ids(tokenizer),
    )
    processor = VideoLLMMoDProcessor(
        image_processor=VideoLLMMoDFrameProcessor(size=RESOLUTION, fps=FPS),
        tokenizer=tokenizer,
        frame_num_tokens=config.frame_num_tokens,
    )
    return VideoLLMMoDForCausalLM(config), processor


def precompute(model, processor, video_dir: str, features_dir: str) -> None:
    """Frame features of every video with the model's (frozen) vision tower, as the raw-frame path computes them."""
    from videollm_mod.data_scripts.precompute_features import FrameEncoder, precompute_features

    encoder = FrameEncoder(model.model.vision_tower, processor.image_processor, model.config.frame_token_pooled)
    videos = sorted(glob.glob(os.path.join(video_dir, "*.mp4")))
    precompute_features(videos, features_dir, lambda: encoder, fps=FPS, dtype="float32", progress=False)


def demo_eval_results(metrics: dict) -> list:
    """The validation figures of `demo_metrics.json` as the card's `EvalResult`s: the model and, for each figure, the
    baseline that shows what it means (the same model fed black frames; never speaking)."""
    from huggingface_hub import EvalResult

    free, forced = metrics["val_free_running"], metrics["val_teacher_forced"]
    figures = [
        ("free-running event F1", free["model"]["f1"]),
        ("free-running event F1, blind (black frames)", free["blind"]["f1"]),
        ("free-running content accuracy", free["model"]["content_accuracy"]),
        ("TimeDiff (s, teacher-forced)", forced["model"]["time_diff"]),
        ("TimeDiff (s), never speaking", forced["never_speak"]["time_diff"]),
    ]
    dataset = f"synthetic narration streams, validation ({metrics['val_rows']} streams)"
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
        training_data="Trained from scratch (no base model) by `python -m videollm_mod.recipes.train_demo` on "
        "synthetic narration streams of coloured shapes rendered by `videollm-mod data synthetic`, after a SigLIP "
        "warm-up on captioned random scenes of the same world: a demonstration of the pipeline, not a model of real video.",
    )
    if metrics is not None:
        data.eval_results, data.model_name = demo_eval_results(metrics), "videollm-mod-demo"
    card = render_model_card(data, model_id="videollm-mod-demo", config=config, eval_results=data.eval_results)
    card.save(os.path.join(folder, "README.md"))


def conversation_texts(dataset) -> list[str]:
    return sorted({m["content"] for row in dataset for m in row["conversation"] if m["content"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="runs/demo")
    parser.add_argument("--output-dir", default="videollm_mod/demo")
    parser.add_argument("--num-videos", type=int, default=200, help="training videos")
    parser.add_argument("--num-val-videos", type=int, default=40, help="validation videos (another seed)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--frame-captions", type=int, default=12000, help="captioned random scenes for the warm-up")
    parser.add_argument("--warmup-epochs", type=float, default=3)
    parser.add_argument("--warmup-learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--text-model-type", default="llama", help="the decoder family (the shipped demo: llama)",
                        choices=remote_constant("configuration_videollm_mod", "TEXT_MODEL_TYPES"))  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from transformers import TrainingArguments
    from trl import SFTConfig

    from videollm_mod.data_scripts._hub import load_prepared_dataset
    from videollm_mod.recipes.sft import VideoSFTScriptArguments, build_trainer
    from videollm_mod.recipes.vision_warmup import WarmupArguments, load_vision_tower, warmup

    seconds: dict[str, float] = {}
    start = time.time()
    os.makedirs(args.work_dir, exist_ok=True)
    train = build_data(os.path.join(args.work_dir, "train"), args.num_videos, args.seconds, args.seed, False,
                       args.frame_captions)  # fmt: skip
    val = build_data(os.path.join(args.work_dir, "val"), args.num_val_videos, args.seconds, args.seed + 1, True)
    seconds["data"] = time.time() - start

    start = time.time()
    siglip_dir = os.path.join(args.work_dir, "siglip")
    if not os.path.exists(siglip_dir):
        warmup(
            WarmupArguments(data=train["frame_captions"]),
            TrainingArguments(
                output_dir=siglip_dir, num_train_epochs=args.warmup_epochs, per_device_train_batch_size=64,
                learning_rate=args.warmup_learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05,
                weight_decay=0.0, logging_steps=20, save_strategy="no", report_to="none", use_cpu=True,
                dataloader_num_workers=0, seed=args.seed, disable_tqdm=True,
            ),
        )  # fmt: skip
    seconds["vision_warmup"] = time.time() - start

    start = time.time()
    dataset = load_prepared_dataset(train["dataset"], "raw")["train"]
    val_dataset = load_prepared_dataset(val["dataset"], "raw")["val"]
    model, processor = build_model_and_processor(conversation_texts(dataset), text_model_type=args.text_model_type)
    load_vision_tower(model, siglip_dir)
    features_dir = os.path.join(args.work_dir, "features")
    precompute(model, processor, train["ego4d_videos"], features_dir)
    precompute(model, processor, val["ego4d_videos"], features_dir)
    seconds["features"] = time.time() - start
    logger.info("demo model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)

    training_args = SFTConfig(
        output_dir=os.path.join(args.work_dir, "checkpoints"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.0,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        dataloader_num_workers=0,
        seed=args.seed,
        disable_tqdm=True,
    )
    script_args = VideoSFTScriptArguments(features_dir=features_dir, train_vision_tower=False)
    trainer = build_trainer(model, processor, dataset, training_args, script_args)
    start = time.time()
    trainer.train()
    seconds["sft"] = time.time() - start
    model.eval()

    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    for code in Path(args.output_dir).glob("*.py"):  # the demo ships as data: its code is the installed package
        code.unlink()

    from videollm_mod.recipes.evaluate import evaluate_streams
    from videollm_mod.recipes.free_running import evaluate_free_running

    start = time.time()
    metrics = {
        "seconds": seconds,
        "train_rows": len(dataset),
        "val_rows": len(val_dataset),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": trainer.state.log_history[-2].get("loss") if len(trainer.state.log_history) > 1 else None,
        "val_teacher_forced": evaluate_streams(
            model, processor, val_dataset, features_dir=features_dir, threshold=0.0, baselines=True
        ),  # fmt: skip
        "val_free_running": evaluate_free_running(
            model, processor, val_dataset, video_root=val["ego4d_videos"], baselines=True
        ),  # fmt: skip
        "command": "python -m videollm_mod.recipes.train_demo " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    metrics["seconds"]["evaluation"] = time.time() - start
    with open(os.path.join(args.output_dir, "demo_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    write_demo_card(args.output_dir, model.config, metrics)
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
