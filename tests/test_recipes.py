"""The SFT recipe: collator outputs for a known row, SFTTrainer steps with LoRA and full fine-tuning."""

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import save_file
from trl import SFTConfig

from videollm_mod.recipes.collator import VideoLLMMoDCollator
from videollm_mod.recipes.distributed_check import tiny_setup
from videollm_mod.recipes.sft import (
    LLM_LINEARS,
    VideoSFTScriptArguments,
    build_trainer,
    make_parser,
    typical_stream_length,
)

ROW = {
    "video_uid": "known",
    "video": "known.mp4",
    "fps": 2.0,
    "start_frame": 1,
    "stop_frame": 4,
    "num_frames": 3,
    "conversation": [
        {"role": "stream", "content": "", "time": 0.5, "learn": 0, "num_frames": 1},
        {"role": "user", "content": "Narrate.", "time": 0.5, "learn": 0, "num_frames": 0},
        {"role": "stream", "content": "", "time": 1.5, "learn": 2, "num_frames": 2},
        {"role": "assistant", "content": "C sees a red circle appear.", "time": 1.5, "learn": 1, "num_frames": 0},
    ],
}


@pytest.fixture
def setup(tmp_path):
    model, processor, dataset = tiny_setup(str(tmp_path), num_rows=8)
    features = torch.arange(5 * 10 * 32, dtype=torch.float32).view(5, 10, 32)  # a 5-frame video
    save_file({"features": features}, str(tmp_path / "known.safetensors"))
    return model, processor, dataset, features, tmp_path


def test_collator_labels_decisions_and_reply_of_a_known_row(setup):
    _, processor, _, _, tmp_path = setup
    batch = VideoLLMMoDCollator(processor, features_dir=str(tmp_path))([ROW])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    video = ids == processor.video_token_id
    last_of_frame = (video & ~torch.cat([video[1:], torch.tensor([False])])).nonzero()[:, 0]  # 3 frames
    decisions = labels[last_of_frame + 1].tolist()
    # frame 0 is not learned; frame 1 stays silent; frame 2 (the stream's last) opens the reply
    assert decisions == [-100, processor.frame_token_interval_id, processor.stream_response_token_id]
    reply = processor.encode_text("Assistant: C sees a red circle appear.") + [processor.tokenizer.eos_token_id]
    assert labels[last_of_frame[-1] + 2 :].tolist() == reply


def test_collator_passes_the_rows_frame_range_in_order(setup):
    _, processor, _, features, tmp_path = setup
    batch = VideoLLMMoDCollator(processor, features_dir=str(tmp_path))([ROW])
    assert torch.equal(batch["frame_features"], features[1:4])


def test_collator_right_pads_with_ignored_labels(setup):
    _, processor, dataset, _, tmp_path = setup
    rows = [ROW, dataset[0]]
    single = [VideoLLMMoDCollator(processor, features_dir=str(tmp_path))([row]) for row in rows]
    batch = VideoLLMMoDCollator(processor, features_dir=str(tmp_path))(rows)
    short = min(range(2), key=lambda i: single[i]["input_ids"].shape[1])
    n = single[short]["input_ids"].shape[1]
    assert batch["attention_mask"][short].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert (batch["labels"][short, n:] == -100).all()
    assert torch.equal(batch["input_ids"][short, :n], single[short]["input_ids"][0])


def train(model, processor, dataset, features_dir, steps=5, peft_config=None, train_vision_tower=False, lr=3e-3):
    args = SFTConfig(
        output_dir=str(features_dir / "out"), max_steps=steps, per_device_train_batch_size=4, learning_rate=lr,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
        activation_checkpointing=False, seed=0,
    )  # fmt: skip
    script_args = VideoSFTScriptArguments(features_dir=None, video_root=str(features_dir), cache_videos=True)
    script_args.train_vision_tower = train_vision_tower
    if not any(f.suffix == ".mp4" for f in features_dir.iterdir()):
        script_args.features_dir, script_args.video_root = str(features_dir), None
    trainer = build_trainer(model, processor, dataset, args, script_args, peft_config=peft_config)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    return losses, changed, trainer


def lora():
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LLM_LINEARS, modules_to_save=["connector", "router"])  # fmt: skip


def test_lora_training_decreases_the_loss(setup):
    model, processor, dataset, _, tmp_path = setup
    losses, _, _ = train(model, processor, dataset, tmp_path, peft_config=lora())
    assert losses[-1] < losses[0] - 0.05


def test_lora_updates_adapters_connector_and_routers_only(setup):
    model, processor, dataset, _, tmp_path = setup
    _, changed, _ = train(model, processor, dataset, tmp_path, steps=2, peft_config=lora())
    assert any("lora_" in n for n in changed)
    assert any("connector" in n for n in changed) and any(".router." in n for n in changed)
    assert not any("vision_tower" in n or "embed_tokens" in n for n in changed)


def test_lora_targets_language_model_linears_only(setup):
    model, processor, dataset, _, tmp_path = setup
    _, _, trainer = train(model, processor, dataset, tmp_path, steps=1, peft_config=lora())
    adapted = {n.split(".lora_A")[0] for n, _ in trainer.model.named_parameters() if "lora_A" in n}
    assert len(adapted) == 4 * 7  # 4 layers x (q, k, v, o, gate, up, down)
    assert not any("vision_tower" in n for n in adapted)


@pytest.fixture
def video_setup(tmp_path):
    model, processor, dataset = tiny_setup(str(tmp_path), num_rows=8, videos=True)
    return model, processor, dataset, tmp_path


def test_full_finetuning_from_videos_decreases_the_loss(video_setup):
    model, processor, dataset, tmp_path = video_setup
    losses, _, _ = train(model, processor, dataset, tmp_path, train_vision_tower=True)
    assert losses[-1] < losses[0] - 0.05


def test_full_finetuning_updates_vision_tower_connector_and_routers(video_setup):
    model, processor, dataset, tmp_path = video_setup
    _, changed, trainer = train(model, processor, dataset, tmp_path, steps=1, train_vision_tower=True)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.vision_tower.") for n in changed)
    assert {n for n in trainable if "connector" in n or ".router." in n} <= changed


def test_full_finetuning_freezes_vision_tower_unless_asked(video_setup):
    model, processor, dataset, tmp_path = video_setup
    _, changed, _ = train(model, processor, dataset, tmp_path, steps=1, train_vision_tower=False)
    assert not any(n.startswith("model.vision_tower.") for n in changed)
    assert any("connector" in n for n in changed)


def test_stream_loss_weight_uses_the_models_weighted_loss(setup):
    model, processor, dataset, _, tmp_path = setup
    collator = VideoLLMMoDCollator(processor, features_dir=str(tmp_path))
    batch = collator([dataset[0], dataset[1]])
    model.config.stream_loss_weight = 3.0
    args = SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none", max_steps=1)
    trainer = build_trainer(model, processor, dataset, args, VideoSFTScriptArguments(features_dir=str(tmp_path)))
    with torch.no_grad():
        expected = model(**batch).loss
        got = trainer.compute_loss(trainer.model, dict(batch))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_trainers_fused_head_projects_only_the_labelled_positions(setup, fused_head_rows):
    """On the CPU, where TRL alone would project every position (the frame placeholders too), the recipe's trainer
    projects the labelled ones only, for the model's own loss."""
    model, processor, dataset, _, tmp_path = setup
    batch = VideoLLMMoDCollator(processor, features_dir=str(tmp_path))([dataset[0], dataset[1]])
    args = SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none", max_steps=1)
    trainer = build_trainer(model, processor, dataset, args, VideoSFTScriptArguments(features_dir=str(tmp_path)))
    projected = fused_head_rows
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, dict(batch))
        every_position = trainer.model(**batch, fused_lm_head=True).loss  # TRL's own choice on the CPU
    rows, length = batch["input_ids"].shape
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert projected == [labelled, rows * (length - 1)] and labelled < batch["attention_mask"].sum() / 2
    assert got.item() == pytest.approx(every_position.item(), rel=1e-6)


def test_paper_config_parses_to_the_papers_lora_settings():
    _, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", "recipes/configs/paper_lora.yaml", "--bf16", "false", "--tf32", "false", "--use_cpu", "true"]
    )
    got = (model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, model_args.lora_target_modules)
    assert got == (128, 256, 0.05, LLM_LINEARS)
    assert model_args.lora_modules_to_save == ["connector", "router"]
    assert (training_args.learning_rate, training_args.num_train_epochs, training_args.warmup_steps) == (2e-4, 2, 0.05)


def test_training_records_the_typical_stream_length_in_the_config(setup):
    model, processor, dataset, _, tmp_path = setup
    collator = VideoLLMMoDCollator(processor, features_dir=str(tmp_path))
    lengths = [collator([row])["input_ids"].shape[1] for row in dataset]
    assert model.config.trained_stream_length is None
    train(model, processor, dataset, tmp_path, steps=4)  # 4 steps x 4 rows: each of the 8 rows twice
    assert model.config.trained_stream_length == typical_stream_length(lengths) in lengths


def test_the_typical_stream_length_is_not_pulled_down_by_short_rows_beside_the_streams():
    streams = [1500, 1550, 1600]
    assert typical_stream_length(streams) == 1550  # alike rows: the median
    assert typical_stream_length(streams + [200] * 6) == 1550  # six short clips: the streams' length (median: 200)
    assert typical_stream_length([100, 100, 100, 1000]) == 1000  # 1,000 of the 1,300 tokens sit in the long row
    assert typical_stream_length([7]) == 7


def test_reply_noise_swaps_replies_within_the_row_and_does_not_learn_them(setup):
    _, processor, _, _, tmp_path = setup
    row = {**ROW, "conversation": ROW["conversation"] + [
        {"role": "stream", "content": "", "time": 2.0, "learn": 1, "num_frames": 1},
        {"role": "assistant", "content": "C sees the red circle turn blue.", "time": 2.0, "learn": 1, "num_frames": 0},
    ]}  # fmt: skip
    collator = VideoLLMMoDCollator(processor, features_dir=str(tmp_path), reply_noise=0.5, seed=0)
    replies = [m["content"] for m in row["conversation"] if m["role"] == "assistant"]
    swapped = 0
    for _ in range(20):
        noisy = [m for m in collator.noisy(row)["conversation"] if m["role"] == "assistant"]
        for message, original in zip(noisy, replies, strict=True):
            assert message["content"] in replies
            assert (message["content"] != original) == (message["learn"] == 0)
            swapped += message["content"] != original
    assert 10 <= swapped <= 30  # about half of the 40 replies
    assert [m["content"] for m in row["conversation"] if m["role"] == "assistant"] == replies  # the row is untouched
    clean = VideoLLMMoDCollator(processor, features_dir=str(tmp_path))([row])
    labels = VideoLLMMoDCollator(processor, features_dir=str(tmp_path), reply_noise=0.99, seed=1)([row])["labels"]
    assert (labels != -100).sum() < (clean["labels"] != -100).sum()  # swapped replies are not learned


def test_spurious_replies_come_after_silent_frames_and_teach_only_what_follows_them(setup):
    """A reply of the row inserted after the learned silent frame of `ROW` (seed 1 draws it): the stream split around
    it, the frames unchanged; learned are the same labels but that frame's `,` (it would teach speaking there), and
    none of the inserted reply's tokens."""
    _, processor, _, _, tmp_path = setup
    collator = VideoLLMMoDCollator(processor, features_dir=str(tmp_path), spurious_replies=0.99, seed=1)
    spurious = collator.with_spurious_replies(ROW)["conversation"]
    reply = "C sees a red circle appear."
    assert [(m["role"], m["num_frames"], m["learn"]) for m in spurious] == [
        ("stream", 1, 0), ("user", 0, 0), ("stream", 1, 0), ("assistant", 0, 0), ("stream", 1, 1), ("assistant", 0, 1)
    ]  # fmt: skip
    assert spurious[3]["content"] == reply and ROW["conversation"][2]["num_frames"] == 2  # the row is untouched
    clean = VideoLLMMoDCollator(processor, features_dir=str(tmp_path))([ROW])
    batch = collator([ROW])
    assert torch.equal(batch["frame_features"], clean["frame_features"])
    learned, clean_learned = batch["labels"][batch["labels"] != -100], clean["labels"][clean["labels"] != -100]
    comma = processor.tokenizer.convert_tokens_to_ids(",")
    assert clean_learned[0] == comma and torch.equal(learned, clean_learned[1:])
    inserted = len(processor.tokenizer("\nAssistant: " + reply, add_special_tokens=False)["input_ids"]) + 1  # + eos
    assert batch["input_ids"].shape[1] >= clean["input_ids"].shape[1] + inserted - 1


def test_spurious_replies_come_at_their_rate_and_never_after_a_streams_last_frame(setup):
    _, processor, _, _, tmp_path = setup
    row = {**ROW, "conversation": [
        {"role": "stream", "content": "", "time": 20.0, "learn": True, "num_frames": 41},
        {"role": "assistant", "content": "C sees a red circle appear.", "time": 20.0, "learn": 1, "num_frames": 0},
    ]}  # fmt: skip
    collator = VideoLLMMoDCollator(processor, features_dir=str(tmp_path), spurious_replies=0.25, seed=0)
    inserted = 0
    for _ in range(20):
        conversation = collator.with_spurious_replies(row)["conversation"]
        streams = [m for m in conversation if m["role"] == "stream"]
        assert sum(m["num_frames"] for m in streams) == 41 and conversation[-2:] == [
            streams[-1],
            row["conversation"][1],
        ]
        assert all(m["learn"] == m["num_frames"] - 1 for m in streams[:-1]) and streams[-1]["learn"] == (
            streams[-1]["num_frames"] if len(streams) > 1 else True
        )
        inserted += len(streams) - 1
    assert 150 <= inserted <= 250  # a quarter of the 40 silent frames, 20 times: 200
