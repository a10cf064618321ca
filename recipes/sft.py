"""Supervised fine-tuning of VideoLLM-MoD with TRL's `SFTTrainer` on prepared stream datasets.

    videollm-mod train --config recipes/configs/tiny_full.yaml             # one process
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m videollm_mod.recipes.sft \
        --config recipes/configs/paper_lora.yaml                             # several processes or machines

Arguments come from three dataclasses (TRL's `TrlParser`, YAML via `--config`, any field overridable on the command
line): `VideoSFTScriptArguments` below (data, frames, what trains), TRL's `SFTConfig` (optimiser, schedule, output)
and TRL's `ModelConfig` (`model_name_or_path`, default: the shipped demo model; `use_peft`, `lora_*`).

The dataset is a prepared `DatasetDict` (`data_scripts`): rows with `conversation` and the video's frame range. The
collator renders them with the model's processor; TRL does no preparation (`skip_prepare_dataset`) and keeps every
column (`remove_unused_columns=False`). With LoRA, the adapters go on the language model's linears only (a regex, so
the vision tower's `q_proj`/`v_proj` are left alone) and `lora_modules_to_save` (connector, routers) train fully.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import os
import sys
from dataclasses import dataclass, field, fields

import torch
from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from ..data_scripts._hub import load_prepared_dataset
from ..errors import UserError
from ..loading import PICKLE_HELP, check_model
from .capacity_warmup import CapacityWarmup
from .collator import VideoLLMMoDCollator

logger = logging.getLogger(__name__)

# All linears of the language model (not the vision tower, not lm_head, which PEFT rejects as a LoRA target here).
LLM_LINEARS = r"model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"


@dataclass
class VideoSFTScriptArguments(ScriptArguments):
    """Data and trainable parts of the VideoLLM-MoD recipe (`dataset_name` is a prepared dataset folder or Hub id)."""

    video_root: str | None = field(default=None, metadata={"help": "folder the rows' `video` paths are relative to"})
    features_dir: str | None = field(
        default=None, metadata={"help": "folder of pre-computed {video_uid}.safetensors; used instead of videos"}
    )
    cache_videos: bool = field(default=False, metadata={"help": "keep decoded videos in memory (small datasets)"})
    train_vision_tower: bool = field(
        default=False, metadata={"help": "full fine-tuning: train the vision tower too (ignored with LoRA)"}
    )
    reply_noise: float = field(
        default=0.0,
        metadata={"help": "probability that a reply is replaced by another reply of its stream, not learned (the "
                  "model learns to name what it sees rather than continue its own mistakes)"},
    )  # fmt: skip
    spurious_replies: float = field(
        default=0.0,
        metadata={"help": "probability that a silent frame is followed by a reply of its stream that is not due there, "
                  "not learned (the model learns what follows the spurious replies it makes running free)"},
    )  # fmt: skip
    stream_loss_weight: float | None = field(
        default=None, metadata={"help": "override config.stream_loss_weight (weight of the per-frame decisions)"}
    )
    mod_capacity_warmup: float = field(
        default=0.0,
        metadata={"help": "share of the training steps over which routed layers anneal from every vision token to the "
                  "model's keep ratio (the official code's disabled warm-up; recipes/capacity_warmup.py)"},
    )  # fmt: skip
    allow_pickle: bool = field(default=False, metadata={"help": PICKLE_HELP})
    plan: bool = field(
        default=False,
        metadata={"help": "print the per-device memory of this config for 1-8 devices under DDP, FSDP and ZeRO-3 and "
                  "exit, reading no weights and no data (recipes/memory_plan.py)"},
    )  # fmt: skip
    plan_preset: str | None = field(
        default=None,
        metadata={"help": "with --plan: the layout of `videollm_mod.presets` to plan instead of model_name_or_path's "
                  "config (full_size: Llama-3-8B + SigLIP-L, the released layout; benchmark)"},
    )  # fmt: skip
    plan_tokens: int | None = field(
        default=None,
        metadata={"help": "with --plan: tokens per stream (default: the model's trained_stream_length, else 4096)"},
    )
    plan_video_share: float = field(
        default=0.9, metadata={"help": "with --plan: the share of a stream's tokens that are frame placeholders"}
    )


def trains_with_fused_head(config) -> bool:
    """Whether the recipe's loss is `SFTTrainer`'s, through TRL's fused LM head (which knows no per-frame decision
    weight), rather than the model's own weighted loss."""
    return config.stream_loss_weight == 1.0


@contextlib.contextmanager
def fused_head_on_labelled_positions():
    """While open, TRL's fused LM head projects only the positions that have a label, on every device.

    TRL does so only on CUDA / XPU with Triton. Elsewhere it projects every position, to keep its tile shapes fixed
    for compilers such as Neuron's; on the CPU that means the frame placeholders too, 80 % or more of a stream's
    positions, which carry no label. The loss is the same either way (the unlabelled rows are masked out); the work is
    not: a tenth to a third of a CPU training step of the MoD study went into those rows, which the GPU path never pays.
    With another TRL, which no longer makes the choice in `trl.trainer.utils._use_triton`, its own choice stands."""
    import trl.trainer.utils as trl_utils

    choice = getattr(trl_utils, "_use_triton", None)
    if choice is None:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or choice(device)
    try:
        yield
    finally:
        trl_utils._use_triton = choice


def typical_stream_length(lengths: list[int]) -> int:
    """The length (tokens) of the row that a trained token typically sits in: the median of the rows' lengths, each
    row counted once per token. The plain median would be pulled down by many short rows beside the streams (COIN
    questions, scene-question clips: 1,800 clips of ~230 tokens beside 990 streams of ~1,550 gave 315, a budget of 8
    frames), though every position of the streams is trained as much as without them."""
    ordered = sorted(lengths)
    half, seen = sum(ordered) / 2, 0
    for length in ordered:
        seen += length
        if seen >= half:
            return int(length)
    raise ValueError("no stream lengths")


class VideoLLMMoDSFTTrainer(SFTTrainer):
    """`SFTTrainer` that records the stream length it trains on and keeps the model's own loss when
    `stream_loss_weight != 1`.

    - After training, `config.trained_stream_length` is the typical length of the rows trained on, over every
      process (`typical_stream_length`): streaming sessions take it as their default cache budget. Not the longest:
      a position that only the few longest rows reach is barely trained (the demo, whose rows run 629 to 924 tokens,
      stays silent on 5 minutes of black video with a budget of its median, 799, and babbles after 33 s with 924).
    - TRL computes the loss through its fused LM head (backbone + `lm_head`), which bypasses the model's forward and
      so the weighting of the per-frame decisions; with a weight other than 1 the model's forward computes the loss
      (the entropy / token-accuracy logs are then not recorded). The fused head projects the labelled positions only,
      on the CPU too (`fused_head_on_labelled_positions`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream_lengths: list[int] = []  # tokens of each row trained on (rows repeat each epoch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if "attention_mask" in inputs:
            self.stream_lengths += inputs["attention_mask"].sum(-1).tolist()
        return super().training_step(model, inputs, num_items_in_batch)

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        mine = torch.tensor(self.stream_lengths or [-1], device=self.accelerator.device)
        lengths = self.accelerator.gather(self.accelerator.pad_across_processes(mine, pad_index=-1))
        lengths = lengths[lengths > 0]
        if len(lengths):
            config = self.accelerator.unwrap_model(self.model).config
            config.trained_stream_length = typical_stream_length(lengths.tolist())
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if trains_with_fused_head(self.accelerator.unwrap_model(model).config):
            with fused_head_on_labelled_positions():
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs, use_cache=False, num_items_in_batch=num_items_in_batch)
        loss = outputs.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as SFTTrainer: DDP averages, the count spans all ranks
        return (loss, outputs) if return_outputs else loss


def load_model_and_processor(
    model_args: ModelConfig, dtype: torch.dtype | None = None, trust_remote_code: bool = False, allow_pickle=False
):
    """The model (in training mode, on the CPU: the Trainer places it) and its processor, from
    `model_args.model_name_or_path` (a VideoLLM-MoD folder or Hub repo; `None`: the shipped demo model), under the
    package's loading policy (`videollm_mod.loading`: `trust_remote_code` and `allow_pickle` are the user's consents)."""
    from ..loading import load_model_and_processor as load

    kwargs = {"revision": model_args.model_revision}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if dtype is not None or model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = dtype or getattr(torch, model_args.dtype)
    model, processor = load(model_args.model_name_or_path, "cpu", trust_remote_code, allow_pickle, **kwargs)
    return model.train(), processor


def prepare_training_args(training_args: SFTConfig) -> SFTConfig:
    """Settings the recipe needs whatever the config says: our collator sees the raw rows."""
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    training_args.max_length = None  # truncating would cut frames' placeholders off their features
    return training_args


def build_trainer(
    model,
    processor,
    train_dataset,
    training_args: SFTConfig,
    script_args: VideoSFTScriptArguments,
    peft_config=None,
    eval_dataset=None,
    callbacks=None,
) -> VideoLLMMoDSFTTrainer:
    """The recipe's trainer: project collator, frozen vision tower unless asked, LoRA restricted to the LLM."""
    if script_args.stream_loss_weight is not None:
        model.config.stream_loss_weight = script_args.stream_loss_weight
    processor.check_model_config(model.config)
    if peft_config is None and not script_args.train_vision_tower:
        model.model.vision_tower.requires_grad_(False)
    collator = VideoLLMMoDCollator(
        processor,
        video_root=script_args.video_root,
        features_dir=script_args.features_dir,
        cache_videos=script_args.cache_videos,
        reply_noise=script_args.reply_noise,
        spurious_replies=script_args.spurious_replies,
        seed=training_args.seed,
    )
    if script_args.mod_capacity_warmup:
        callbacks = [*(callbacks or []), CapacityWarmup(model.config, script_args.mod_capacity_warmup)]
    return VideoLLMMoDSFTTrainer(
        model=model,
        args=prepare_training_args(training_args),
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def make_parser() -> TrlParser:
    parser = TrlParser((VideoSFTScriptArguments, SFTConfig, ModelConfig), prog="videollm-mod train")
    # TrlParser reads `--config` itself before parsing; declared here (absent from the namespace) so --help lists it.
    parser.add_argument(
        "--config", default=argparse.SUPPRESS, help="YAML file of any of the options below (the command line wins)"
    )
    # TRL's default is bf16, which stops the Trainer on a machine without a GPU; there, train in float32 unless told.
    # TRL 1.16 also defaults the deprecated `gradient_checkpointing`, which warns on every run: default the new name.
    bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    parser.set_defaults(bf16=bf16_ok, use_cpu=not torch.cuda.is_available(), activation_checkpointing=True)
    # A usage error prints one line and where to look, not the usage of the ~250 options.
    parser.print_usage = lambda file=None: print(f"{parser.prog}: see `{parser.prog} --help`", file=file)
    return parser


def parse_args(argv: list[str] | None):
    """`(script_args, training_args, model_args)`; `videollm-mod train CONFIG.yaml` means `--config CONFIG.yaml`. A
    key of the YAML file that no option has is a `UserError` naming the file, the key and the nearest option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = ["--config", *argv]
    config = None
    if "--config" in argv:
        index = argv.index("--config")
        config = argv[index + 1] if index + 1 < len(argv) else ""
        if not os.path.isfile(config):
            raise UserError(f"--config {config}: no such YAML file")
    parser = make_parser()
    *parsed, from_config, from_command_line = parser.parse_args_and_config(
        argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    if from_command_line:
        parser.error(f"unrecognized arguments: {' '.join(from_command_line)}")
    if from_config:  # ["--key", "value", ...]: what TRL leaves of the YAML file's keys
        unknown = from_config[0].removeprefix("--")
        known = [f.name for arguments in (VideoSFTScriptArguments, SFTConfig, ModelConfig) for f in fields(arguments)]
        nearest = difflib.get_close_matches(unknown, known, n=1)
        hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
        raise UserError(f"{config}: unknown key {unknown!r}{hint}")
    return tuple(parsed)


def print_memory_plan(script_args, training_args, model_args) -> None:
    """`--plan`: the memory plan of the config (`recipes/memory_plan.py`), from the model's config alone."""
    from .. import presets
    from .memory_plan import TrainingShape, dense_plan, format_plan, plan

    if script_args.plan_preset is not None:
        builders = {"full_size": presets.full_size_config, "benchmark": presets.benchmark_config}
        if script_args.plan_preset not in builders:
            raise UserError(f"plan_preset {script_args.plan_preset!r}: one of {sorted(builders)}")
        config = builders[script_args.plan_preset]()
    else:
        from modeling_videollm_mod import VideoLLMMoDConfig

        checked = check_model(model_args.model_name_or_path, training_args.trust_remote_code, True)
        config = VideoLLMMoDConfig.from_pretrained(checked.path, revision=model_args.model_revision)
    half = training_args.bf16 or training_args.fp16
    # the weights' dtype: the one asked for, else the checkpoint's ("auto"), else the mixed-precision flag's
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else getattr(config, "dtype", None)
    dtype = str(dtype).removeprefix("torch.") if dtype is not None else ("bfloat16" if half else "float32")
    weight_bytes = {"bfloat16": 2, "float16": 2}.get(dtype, 4)
    shape = TrainingShape(
        batch=training_args.per_device_train_batch_size,
        tokens=script_args.plan_tokens or getattr(config, "trained_stream_length", None) or 4096,
        video_share=script_args.plan_video_share,
        weight_bytes=weight_bytes,
        activation_bytes=2 if half or weight_bytes == 2 else 4,
        lora_r=model_args.lora_r if model_args.use_peft else None,
        lora_target=model_args.lora_target_modules if isinstance(model_args.lora_target_modules, str) else LLM_LINEARS,
        modules_to_save=tuple(model_args.lora_modules_to_save or ()),
        train_vision_tower=script_args.train_vision_tower,
        checkpointing=bool(training_args.activation_checkpointing),
    )
    print(format_plan(plan(config, shape), config, shape, dense_plan(config, shape)))


def main(argv: list[str] | None = None) -> int:
    script_args, training_args, model_args = parse_args(argv)
    if script_args.plan:
        print_memory_plan(script_args, training_args, model_args)
        return 0
    if script_args.dataset_name is None:
        raise UserError("dataset_name is required (a prepared dataset folder or Hub id, see `videollm-mod data`)")
    if not 0.0 <= script_args.mod_capacity_warmup < 1.0:
        raise UserError(f"mod_capacity_warmup {script_args.mod_capacity_warmup}: must lie in [0, 1)")
    for name in ("video_root", "features_dir"):
        folder = getattr(script_args, name)
        if folder is not None and not os.path.isdir(folder):
            raise UserError(f"{name} {folder}: no such folder")
    # a refused model stops here, before the data is read
    check_model(
        model_args.model_name_or_path, training_args.trust_remote_code, script_args.allow_pickle,
        model_args.model_revision,
    )  # fmt: skip
    dataset = load_prepared_dataset(script_args.dataset_name, script_args.dataset_config, "dataset_name")
    if script_args.dataset_train_split not in dataset:
        raise UserError(
            f"dataset_train_split {script_args.dataset_train_split!r}: {script_args.dataset_name} has the splits "
            f"{sorted(dataset)}"
        )
    model, processor = load_model_and_processor(
        model_args, trust_remote_code=training_args.trust_remote_code, allow_pickle=script_args.allow_pickle
    )
    peft_config = get_peft_config(model_args)
    if peft_config is not None and peft_config.target_modules is None:
        peft_config.target_modules = LLM_LINEARS
    eval_dataset = None
    if training_args.eval_strategy != "no" and script_args.dataset_test_split in dataset:
        eval_dataset = dataset[script_args.dataset_test_split]
    trainer = build_trainer(
        model,
        processor,
        dataset[script_args.dataset_train_split],
        training_args,
        script_args,
        peft_config=peft_config,
        eval_dataset=eval_dataset,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        write_fine_tuned_card(training_args.output_dir, model_args.model_name_or_path, script_args.dataset_name, model)
        print(f"saved the fine-tuned model to {training_args.output_dir}")
    return 0


def write_fine_tuned_card(output_dir: str, parent: str | None, dataset: str, model) -> None:
    """The model card of a fine-tuned model: its provenance (the parent model and its licence, the dataset)."""
    from huggingface_hub import ModelCard

    from ..conversion.model_card import fine_tuned_card_data, folder_card_data, render_model_card
    from ..loading import resolve_model

    parent = resolve_model(parent)
    if os.path.isdir(parent):
        parent_card = folder_card_data(parent)
    else:
        try:
            parent_card = ModelCard.load(parent).data
        except Exception:  # offline, or no card on the Hub: the licence must then be given at release
            parent_card = None
    card_data = fine_tuned_card_data(parent, parent_card, dataset)
    card = render_model_card(card_data, model_id=os.path.basename(os.path.abspath(output_dir)), config=model.config)
    card.save(os.path.join(output_dir, "README.md"))


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod train", main, sys.argv[1:]))
