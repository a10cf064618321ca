"""Encoding videos with PyAV (the synthetic generator writes mp4s); decoding is the model's own sampler,
`modeling_videollm_mod.load_video`, so that every frame count in the project agrees."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np


def write_video(path: str, frames: np.ndarray, fps: float, codec: str = "mpeg4", bit_rate: int = 4_000_000) -> None:
    """Encode ``uint8 [T, H, W, 3]`` RGB frames as an mp4 at ``fps``; written to a temporary name, then renamed."""
    import av

    tmp = f"{path}.tmp-{os.getpid()}.mp4"
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bit_rate
        stream.thread_count = 1  # deterministic output and modest CPU use
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
