"""Vision warm-up: SigLIP on synthetic (frame, caption) pairs through Trainer, and its tower handed to a video model."""

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SiglipVisionModel, TrainingArguments

from modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDFrameProcessor
from videollm_mod.data_scripts.synthetic import generate_dataset
from videollm_mod.presets import tiny_config
from videollm_mod.recipes.vision_warmup import (
    VISION_TOWER,
    FrameCaptionCollator,
    WarmupArguments,
    load_vision_tower,
    warmup,
)
from videollm_mod.tokenizer_tools import build_stream_tokenizer

TINY = dict(image_size=24, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(scope="module")
def frame_captions(tmp_path_factory):
    paths = generate_dataset(str(tmp_path_factory.mktemp("syn") / "data"), num_videos=4, seconds=10, fps=2,
                             resolution=24, seed=5, num_coin_videos=0, val_fraction=0.25, test_fraction=0.0,
                             frame_captions=6)  # fmt: skip
    return paths


@pytest.fixture(scope="module")
def warmed_up(frame_captions, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("siglip"))
    args = TrainingArguments(output_dir=out, max_steps=8, per_device_train_batch_size=8, learning_rate=3e-3,
                             use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
                             disable_tqdm=True, seed=0)  # fmt: skip
    trainer = warmup(WarmupArguments(data=frame_captions["frame_captions"], **TINY), args)
    return out, trainer


def test_frame_captions_are_random_scenes_captioned_with_what_they_show(frame_captions):
    records = [json.loads(line) for line in open(os.path.join(frame_captions["frame_captions"], "metadata.jsonl"))]
    assert [r["file_name"] for r in records] == [f"scene{i:06d}.png" for i in range(6)]
    shape = r"(red|green|blue|yellow) (circle|square|triangle) x[0-4] y[0-4]"
    assert all(re.fullmatch(rf"nothing|{shape}( and {shape})*", r["text"]) for r in records), records


def test_collator_drops_repeated_captions_and_uses_the_frame_processor():
    processor = VideoLLMMoDFrameProcessor(size=8)
    tokenizer = build_stream_tokenizer(["red circle x1 y1", "nothing"], vocab_size=300)
    images = [Image.fromarray(np.full((8, 8, 3), v, dtype=np.uint8)) for v in (10, 20, 30)]
    rows = [{"image": images[0], "text": "nothing"}, {"image": images[1], "text": "red circle x1 y1"},
            {"image": images[2], "text": "nothing"}]  # fmt: skip
    batch = FrameCaptionCollator(processor, tokenizer, "image", "text", max_caption_tokens=12)(rows)
    expected = processor.transform(processor.to_frames(np.stack([np.asarray(images[0]), np.asarray(images[1])])))
    assert torch.equal(batch["pixel_values"], expected)
    assert batch["input_ids"].shape == (2, 12) and batch["return_loss"] is True
    assert tokenizer.decode(batch["input_ids"][1], skip_special_tokens=True) == "red circle x1 y1"


def test_warmup_lowers_the_sigmoid_loss(warmed_up):
    losses = [entry["loss"] for entry in warmed_up[1].state.log_history if "loss" in entry]
    assert len(losses) == 8 and losses[-1] < losses[0]


def test_warmup_writes_a_siglip_and_its_vision_tower(warmed_up):
    out, trainer = warmed_up
    model = trainer.model
    tower = SiglipVisionModel.from_pretrained(os.path.join(out, VISION_TOWER))
    saved, trained = tower.state_dict(), model.vision_model.state_dict()
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    assert json.load(open(os.path.join(out, VISION_TOWER, "preprocessor_config.json")))["size"] == 24


def test_video_model_gets_the_warmup_tower(warmed_up):
    out, trainer = warmed_up
    model = trainer.model.eval()
    video = VideoLLMMoDForCausalLM(tiny_config(hidden_size=32, image_size=24)).eval()
    load_vision_tower(video, out)
    pixels = torch.randn(2, 3, 24, 24)
    expected = model.vision_model(pixel_values=pixels).pooler_output
    assert torch.allclose(video.model.vision_tower(pixel_values=pixels).pooler_output, expected, atol=1e-6)


def test_a_tower_of_other_sizes_is_refused(warmed_up):
    out, _ = warmed_up
    video = VideoLLMMoDForCausalLM(tiny_config(hidden_size=32, image_size=36))
    with pytest.raises(ValueError, match="image_size 24 != the model's 36"):
        load_vision_tower(video, out)
