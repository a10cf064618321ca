"""The blind baseline's input (`recipes/blind.py`), one owner for every evaluation: black frames in each form the
evaluations feed, and the forms agree: the model reads the same thing from black pixels and from their features."""

import pytest
import torch

from videollm_mod.loading import load_model_and_processor
from videollm_mod.recipes.blind import black_like


@pytest.fixture(scope="module")
def demo():
    return load_model_and_processor(None, device="cpu", dtype=torch.float32)


def test_raw_frames_become_zeros(demo):
    model, processor = demo
    assert torch.equal(black_like(model, processor, "frames", torch.full((2, 5, 5, 3), 7)), torch.zeros(2, 5, 5, 3))


def test_pixels_are_black_frames_through_the_processor(demo):
    model, processor = demo
    pixels = black_like(model, processor, "pixel_values_videos", torch.randn(3, 3, 48, 48))
    assert pixels.shape == (3, 3, 48, 48) and (pixels == -1.0).all()  # 0 / 255 normalised with mean = std = 0.5


@pytest.mark.parametrize("key", ["frame_features", "features"])
def test_features_are_black_pixels_through_the_models_vision_tower(demo, key):
    """The same logits whether the model is fed black pixels or the black features: the two forms are one input."""
    model, processor = demo
    F, D = model.config.frame_num_tokens, model.config.vision_config.hidden_size
    features = black_like(model, processor, key, torch.randn(2, F, D, dtype=torch.float64))
    assert features.shape == (2, F, D) and features.dtype == torch.float64
    pixels = black_like(model, processor, "pixel_values_videos", torch.zeros(2, 3, 48, 48))
    ids = torch.tensor([[model.config.video_token_id] * F + [model.config.frame_token_interval_id]] * 2).view(1, -1)
    with torch.no_grad():
        from_pixels = model(input_ids=ids, pixel_values_videos=pixels).logits
        from_features = model(input_ids=ids, frame_features=features.float()).logits
    assert torch.allclose(from_pixels, from_features, atol=1e-5)


def test_an_unknown_form_is_named(demo):
    model, processor = demo
    with pytest.raises(ValueError, match="'pixels'"):
        black_like(model, processor, "pixels", torch.zeros(1))
