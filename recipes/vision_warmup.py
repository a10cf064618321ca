"""Vision warm-up: pretrain a small SigLIP on (frame, caption) pairs with its own sigmoid loss, for a video model to
start from a vision tower that already tells things apart (as the released model starts from a pretrained SigLIP).

    videollm-mod warmup --data runs/demo/train/synthetic/frame_captions --output_dir runs/demo/tower \\
        --image_size 48 --patch_size 8 --hidden_size 128 --num_hidden_layers 2 --num_train_epochs 10 \\
        --per_device_train_batch_size 128 --learning_rate 1e-3 --lr_scheduler_type cosine --use_cpu true \\
        --report_to none              # the MoD study's and the demo's warm-up (`recipes.study_data.warm_up_tower`)

Data: any dataset of images with a caption each: an image folder with a `metadata.jsonl` of `file_name` / `text`
(what `videollm-mod data synthetic --frame-captions N` writes), a parquet folder or a Hub dataset with the columns
`--image_column` and `--caption_column`. Frames go through the video model's own frame preprocessing
(`VideoLLMMoDFrameProcessor.transform`), so the tower learns on exactly what it will be fed.

Model: transformers' `SiglipModel` (a vision and a text tower from a `SiglipConfig` of the given sizes), trained with
`return_loss=True`, its sigmoid loss, through the library's `Trainer` (every `TrainingArguments` field works). The
captions are tokenised with a byte-level BPE trained on them (`tokenizer_tools`) unless `--tokenizer` names one,
padded to `--max_caption_tokens` (default: the longest caption's length) as SigLIP was trained. A batch never holds
the same caption twice: the sigmoid loss counts every other pair of the batch as a negative, so a repeated caption
would push matching frames apart.

Writes `output_dir` (the `SiglipModel` and its tokenizer) and `output_dir/vision_tower` (the `SiglipVisionModel`
alone, with the frame processor's settings), which `load_vision_tower` hands to a video model and which
`videollm-mod data precompute_features --model .../vision_tower --frame-token-pooled 3 3` reads.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments

from modeling_videollm_mod import VideoLLMMoDFrameProcessor

from ..errors import UserError

logger = logging.getLogger(__name__)

VISION_TOWER = "vision_tower"  # the subfolder of the warm-up's output that holds the vision tower alone


@dataclass
class WarmupArguments:
    """Data and sizes of the warm-up SigLIP (the video model's vision tower must match them)."""

    data: str = field(metadata={"help": "image folder (metadata.jsonl: file_name, text), parquet folder or Hub id"})
    image_column: str = field(default="image")
    caption_column: str = field(default="text")
    split: str = field(default="train")
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder or Hub id (default: trained)"})
    vocab_size: int = field(default=1024, metadata={"help": "at most, of the tokenizer trained on the captions"})
    max_caption_tokens: int | None = field(default=None, metadata={"help": "default: the longest caption's"})
    image_size: int = field(default=48)
    patch_size: int = field(default=8)
    hidden_size: int = field(default=128)
    num_hidden_layers: int = field(default=2, metadata={"help": "of the vision tower"})
    text_num_hidden_layers: int = field(default=1, metadata={"help": "of the text tower (discarded after)"})
    num_attention_heads: int = field(default=4)


def siglip_config(args: WarmupArguments, tokenizer):
    """A `SiglipConfig` of the given sizes (the text tower as wide as the vision tower) for `tokenizer`."""
    from transformers import SiglipConfig

    tower = {
        "hidden_size": args.hidden_size,
        "intermediate_size": 2 * args.hidden_size + 5,
        "num_attention_heads": args.num_attention_heads,
    }
    text = {"vocab_size": len(tokenizer), "max_position_embeddings": args.max_caption_tokens,
            "num_hidden_layers": args.text_num_hidden_layers, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    return SiglipConfig(
        vision_config={
            **tower,
            "num_hidden_layers": args.num_hidden_layers,
            "image_size": args.image_size,
            "patch_size": args.patch_size,
        },  # fmt: skip
        text_config={**tower, **text},
    )


def build_siglip(config):
    """A fresh `SiglipModel` with the SigLIP paper's initial temperature and bias (t' = log 10, b = -10): the
    library's weight init zeroes both, which leaves the sigmoid loss nearly flat at the start."""
    from transformers import SiglipModel

    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model


class FrameCaptionCollator:
    """Rows `{image, caption}` -> `pixel_values` (B, 3, S, S), `input_ids` (B, max_caption_tokens), `return_loss`;
    rows whose caption already appeared in the batch are dropped (see the module docstring)."""

    def __init__(self, frame_processor: VideoLLMMoDFrameProcessor, tokenizer, image_column: str, caption_column: str,
                 max_caption_tokens: int):  # fmt: skip
        self.frame_processor, self.tokenizer = frame_processor, tokenizer
        self.image_column, self.caption_column = image_column, caption_column
        self.max_caption_tokens = max_caption_tokens

    def __call__(self, rows: list[dict]) -> dict:
        seen, unique = set(), []
        for row in rows:
            if row[self.caption_column] not in seen:
                seen.add(row[self.caption_column])
                unique.append(row)
        images = [np.asarray(row[self.image_column].convert("RGB")) for row in unique]
        frames = self.frame_processor.to_frames(images)  # (B, 3, H, W) uint8
        captions = self.tokenizer(
            [row[self.caption_column] for row in unique],
            padding="max_length",
            truncation=True,
            max_length=self.max_caption_tokens,
            return_tensors="pt",
        )
        return {
            "pixel_values": self.frame_processor.transform(frames),
            "input_ids": captions["input_ids"],
            "return_loss": True,
        }


def load_frame_captions(args: WarmupArguments):
    """The split of (image, caption) rows; a missing folder or column is a `UserError` naming it."""
    from datasets import load_dataset

    from ..loading import looks_like_repo_id

    if os.path.isdir(args.data):
        has_metadata = any(os.path.isfile(os.path.join(args.data, f"metadata.{e}")) for e in ("jsonl", "csv"))
        dataset = load_dataset("imagefolder" if has_metadata else args.data, data_dir=args.data if has_metadata
                               else None, download_mode="force_redownload", verification_mode="no_checks")  # fmt: skip
    elif looks_like_repo_id(args.data):
        dataset = load_dataset(args.data)
    else:
        raise UserError(f"--data {args.data}: no such folder (write one with `videollm-mod data synthetic "
                        f"--frame-captions N`)")  # fmt: skip
    if args.split not in dataset:
        raise UserError(f"--split {args.split!r}: {args.data} has the splits {sorted(dataset)}")
    dataset = dataset[args.split]
    for column in (args.image_column, args.caption_column):
        if column not in dataset.column_names:
            raise UserError(f"--data {args.data}: no column {column!r} (columns: {dataset.column_names})")
    return dataset


def load_tokenizer(args: WarmupArguments, captions: list[str]):
    if args.tokenizer is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    from ..tokenizer_tools import build_stream_tokenizer

    return build_stream_tokenizer(sorted(set(captions)), vocab_size=args.vocab_size)


def warmup(args: WarmupArguments, training_args: TrainingArguments):
    """Train the SigLIP and save it (see the module docstring); returns the trainer (`trainer.model`: the SigLIP)."""
    dataset = load_frame_captions(args)
    captions = dataset[args.caption_column]
    tokenizer = load_tokenizer(args, captions)
    if args.max_caption_tokens is None:
        args.max_caption_tokens = max(len(ids) for ids in tokenizer(sorted(set(captions)))["input_ids"])
    config = siglip_config(args, tokenizer)
    model = build_siglip(config)
    frame_processor = VideoLLMMoDFrameProcessor(size=args.image_size)
    training_args.remove_unused_columns = False  # the collator reads the image and caption columns
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=FrameCaptionCollator(
            frame_processor, tokenizer, args.image_column, args.caption_column, args.max_caption_tokens
        ),  # fmt: skip
    )
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model(training_args.output_dir)
        tokenizer.save_pretrained(training_args.output_dir)
        tower = os.path.join(training_args.output_dir, VISION_TOWER)
        model.vision_model.save_pretrained(tower)
        frame_processor.save_pretrained(tower)
    return trainer


def load_vision_tower(model, folder: str) -> None:
    """Put the warm-up's vision tower (`folder`: its output folder or the `vision_tower` subfolder) into a
    VideoLLM-MoD `model`, whose `config.vision_config` must have the same sizes."""
    from transformers import SiglipVisionModel

    path = os.path.join(folder, VISION_TOWER) if os.path.isdir(os.path.join(folder, VISION_TOWER)) else folder
    tower = SiglipVisionModel.from_pretrained(path)
    mine = model.config.vision_config
    for name in ("hidden_size", "num_hidden_layers", "image_size", "patch_size", "intermediate_size"):
        if getattr(tower.config, name) != getattr(mine, name):
            raise ValueError(f"vision tower {path}: {name} {getattr(tower.config, name)} != the model's "
                             f"{getattr(mine, name)}")  # fmt: skip
    model.model.vision_tower.load_state_dict(tower.state_dict())


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((WarmupArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses(argv)
    warmup(args, training_args)
    print(f"saved the warm-up SigLIP to {training_args.output_dir} (vision tower: {VISION_TOWER}/)")
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod warmup", main, sys.argv[1:]))
