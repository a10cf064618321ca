"""Reproduce the shipped demo model from scratch: synthetic streams -> narration dataset -> tokenizer -> SFT -> metrics.

    python -m videollm_mod.recipes.train_demo --work-dir runs/demo --output-dir videollm_mod/demo

1. `data_scripts.synthetic` renders shape videos with Ego4D-style narrations; `data_scripts.prepare_ego4d_narration`
   turns them into the narration-stream dataset (train / val by the Ego4D benchmark lists, val held out).
2. A byte-level BPE tokenizer (`tokenizer_tools.build_stream_tokenizer`) is trained on the dataset's texts.
3. A small VideoLLM-MoD (Llama 4 x 128, SigLIP 2 x 128 at 36 px, 10 tokens per frame, MoD on the odd layers with
   r = 0.2, learned routers) is fully fine-tuned end to end from raw frames, vision tower included, with the recipe's
   `SFTTrainer` (`recipes.sft.build_trainer`).
4. The model is evaluated on the held-out split (LM-PPL, TimeDiff, Fluency, LM-Correctness) against two timing
   baselines that use the same text predictions: never speak, and speak at random frames at the training rate.
   The folder (weights, config, processor, tokenizer: the shipped demo is data, so the code files that
   `save_pretrained` writes are removed) is written; the metrics go to `{output_dir}/demo_metrics.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def build_data(work_dir: str, num_videos: int, seconds: float, seed: int) -> tuple[str, str]:
    """Synthetic videos + the prepared narration dataset (cached in `work_dir`); returns (dataset dir, video root)."""
    from videollm_mod.data_scripts import prepare_ego4d_narration, synthetic

    raw = os.path.join(work_dir, "synthetic")
    paths = synthetic.dataset_paths(raw)
    if not os.path.exists(raw):
        synthetic.generate_dataset(
            raw, num_videos=num_videos, seconds=seconds, fps=4.0, resolution=32, seed=seed, num_coin_videos=0,
            difficulty=1, event_interval=2.5, val_fraction=0.15, test_fraction=0.0,
        )  # fmt: skip
    dataset_dir = os.path.join(work_dir, "narration")
    if not os.path.exists(dataset_dir):
        prepare_ego4d_narration.main(
            ["--annotation-dir", paths["ego4d_annotations"], "--video-root", paths["ego4d_videos"],
             "--output-dir", dataset_dir, "--variants", "raw", "--fps", "2"]
        )  # fmt: skip
    return dataset_dir, paths["ego4d_videos"]


def build_model_and_processor(texts: list[str], image_size: int = 36, hidden_size: int = 128, num_layers: int = 4):
    """A fresh demo-sized VideoLLM-MoD and its processor (tokenizer trained on `texts`)."""
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
        vocab_size=len(tokenizer),
        image_size=image_size,
        **stream_token_ids(tokenizer),
    )
    processor = VideoLLMMoDProcessor(
        image_processor=VideoLLMMoDFrameProcessor(size=image_size, fps=2.0),
        tokenizer=tokenizer,
        frame_num_tokens=config.frame_num_tokens,
    )
    return VideoLLMMoDForCausalLM(config), processor


def write_demo_card(folder: str, config) -> None:
    """The demo's model card: trained from scratch here (no base model), under the project's licence."""
    from videollm_mod.conversion.model_card import base_card_data, render_model_card

    data = base_card_data(
        license="apache-2.0",
        training_data="Trained from scratch (no base model) by `python -m videollm_mod.recipes.train_demo` on synthetic narration "
        "streams of coloured shapes rendered by `videollm-mod data synthetic`: a demonstration of the pipeline, not "
        "a model of real video.",
    )
    render_model_card(data, model_id="videollm-mod-demo", config=config).save(os.path.join(folder, "README.md"))


def conversation_texts(dataset) -> list[str]:
    return sorted({m["content"] for row in dataset for m in row["conversation"] if m["content"]})


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="runs/demo")
    parser.add_argument("--output-dir", default="videollm_mod/demo")
    parser.add_argument("--num-videos", type=int, default=240)
    parser.add_argument("--seconds", type=float, default=24.0)
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from trl import SFTConfig

    from videollm_mod.data_scripts._hub import load_prepared_dataset
    from videollm_mod.recipes.evaluate import evaluate_streams, speak_rate
    from videollm_mod.recipes.sft import VideoSFTScriptArguments, build_trainer

    os.makedirs(args.work_dir, exist_ok=True)
    dataset_dir, video_root = build_data(args.work_dir, args.num_videos, args.seconds, args.seed)
    dataset = load_prepared_dataset(dataset_dir, "raw")
    model, processor = build_model_and_processor(conversation_texts(dataset["train"]))
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
    )
    script_args = VideoSFTScriptArguments(video_root=video_root, cache_videos=True, train_vision_tower=True)
    trainer = build_trainer(model, processor, dataset["train"], training_args, script_args)
    start = time.time()
    trainer.train()
    train_seconds = time.time() - start

    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    for code in Path(args.output_dir).glob("*.py"):  # the demo ships as data: its code is the installed package
        code.unlink()
    write_demo_card(args.output_dir, model.config)
    metrics = {
        "train_seconds": train_seconds,
        "train_rows": len(dataset["train"]),
        "val_rows": len(dataset["val"]),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": trainer.state.log_history[-2].get("loss") if len(trainer.state.log_history) > 1 else None,
        "speak_rate": speak_rate(dataset["val"]),
        "threshold_0": evaluate_streams(model, processor, dataset["val"], video_root, threshold=0.0, baselines=True),
        "threshold_0.725": evaluate_streams(
            model, processor, dataset["val"], video_root, threshold=0.725, baselines=True
        ),
        "command": "python -m videollm_mod.recipes.train_demo " + " ".join(argv if argv is not None else []),
    }
    with open(os.path.join(args.output_dir, "demo_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
