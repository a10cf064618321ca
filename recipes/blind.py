"""The input of the blind baseline, for every evaluation (teacher-forced, free-running, answers): the same frames, as
many, in the same form, all black. The gap between a model and itself fed this is what it sees."""

from __future__ import annotations

import torch

RAW, PIXELS, FEATURES = "frames", "pixel_values_videos", "frame_features"
FORMS = {RAW: RAW, "features": FEATURES, PIXELS: PIXELS, FEATURES: FEATURES}  # narrate_stream calls features so


def black_frame_features(model, processor, count: int) -> torch.Tensor:
    """(count, F, D) features of black frames, through the model's own preprocessing, vision tower and pooling (as
    `precompute_features` encodes a video)."""
    from ..data_scripts.precompute_features import FrameEncoder

    size = processor.image_processor.size
    encoder = FrameEncoder(model.model.vision_tower, processor.image_processor, model.config.frame_token_pooled)
    return encoder(torch.zeros(count, size, size, 3, dtype=torch.uint8))


def black_like(model, processor, key: str, frames: torch.Tensor) -> torch.Tensor:
    """`frames` all black, in the form `key` names: raw frames (`frames`, uint8 (T, H, W, 3)) are zeros; the
    processor's pixels (`pixel_values_videos`, (T, 3, S, S)) its transform of black frames; features
    (`frame_features` or `features`, (T, F, D)) black frames through the model (`black_frame_features`), in the
    features' dtype."""
    form = FORMS.get(key)
    if form is None:
        raise ValueError(f"{key!r}: frames come as {sorted(FORMS)}")
    if form == RAW:
        return torch.zeros_like(frames)
    if form == PIXELS:
        size = processor.image_processor.size
        return processor.image_processor.transform(torch.zeros(len(frames), 3, size, size, dtype=torch.uint8))
    return black_frame_features(model, processor, len(frames)).to(frames.dtype)
