"""Helpers of the streaming tests: a tiny stream tokenizer and processor, tiny random models whose decisions vary,
a model that never speaks, frame features and a video writer."""

from fractions import Fraction

import numpy as np
import torch

from modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
from videollm_mod.presets import tiny_config
from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids

TEXTS = ["#C C sees a red circle appear", "#C C picks up a blue square", "what is on the table?"]
VARIANTS = {"dense": {"mod_layers": []}, "mod": {"mod_layers": None}}
# The official code's EarlyExit: from layer 2 on, vision and interval tokens skip every layer (`dropall`).
EARLY_EXIT = {"mod_layers": [2, 3], "mod_keep_ratio": 0.0, "mod_skip_interval_tokens": True}


def stream_processor() -> VideoLLMMoDProcessor:
    """The `processor` fixture of the streaming tests (conftest.py): a 120-token stream tokenizer, 24 px frames."""
    tokenizer = build_stream_tokenizer(TEXTS, vocab_size=120)
    return VideoLLMMoDProcessor(
        VideoLLMMoDFrameProcessor(size=24), tokenizer, frame_num_tokens=10, system_prompt="sys"
    )


def make_model(processor, mod_layers=None, interval_scale: float = 6.0, **overrides) -> VideoLLMMoDForCausalLM:
    """A tiny random model whose P(interval) varies around 0.5 from frame to frame, so that threshold 0.5 gives both
    silent and spoken frames (a random lm_head row would make the interval token ~1/V likely everywhere)."""
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=len(processor.tokenizer),
        mod_layers=mod_layers,
        **stream_token_ids(processor.tokenizer),
        **overrides,
    )
    model = VideoLLMMoDForCausalLM(config).eval()
    with torch.no_grad():
        direction = torch.randn(config.text_config.hidden_size)
        model.lm_head.weight[config.frame_token_interval_id] = interval_scale * direction / direction.norm()
    return model


class InflatedToken(torch.nn.Module):
    """`lm_head` with one token's logit raised by `value` (to make a random model stay silent)."""

    def __init__(self, lm_head: torch.nn.Linear, token_id: int, value: float):
        super().__init__()
        self.lm_head, self.token_id, self.value = lm_head, token_id, value

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden_states)
        return logits.index_add(-1, torch.tensor([self.token_id]), torch.full((*logits.shape[:-1], 1), self.value))


def silent_model(processor, mod_layers=None) -> VideoLLMMoDForCausalLM:
    """A model that never speaks by itself at threshold 0: the interval token always wins the argmax."""
    model = make_model(processor, mod_layers)
    model.lm_head = InflatedToken(model.lm_head, model.config.frame_token_interval_id, 100.0)
    return model


def features(num_frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(num_frames, 10, 32, generator=torch.Generator().manual_seed(seed))


def half_seconds(num_frames: int) -> list[float]:
    return [i / 2 for i in range(num_frames)]


def assert_same_stream(got, expected):
    """Two streams fed the same frames: same tokens, events and decision times, P(interval) within float noise."""
    assert got.transcript_ids == expected.transcript_ids
    assert got.events == expected.events
    assert [t for t, _ in got.decisions] == [t for t, _ in expected.decisions]
    assert np.abs(np.subtract([p for _, p in got.decisions], [p for _, p in expected.decisions])).max() <= 1e-5


def teacher_forced(model, session, frame_features):
    """Logits of one full-sequence forward over the session's transcript (+ its pending tokens)."""
    ids = torch.tensor([session.transcript_ids + session.pending])
    with torch.no_grad():
        return model(input_ids=ids, frame_features=frame_features).logits[0], ids[0]


def encode_video(frames: np.ndarray, fps: int, file, container_format: str | None = None) -> None:
    """Encode uint8 (T, H, W, 3) frames as MPEG-4 video into `file` (a path or a binary file object)."""
    import av

    with av.open(file, mode="w", format=container_format) as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(path, frames: np.ndarray, fps: int) -> None:
    encode_video(frames, fps, str(path))


def random_video(num_frames: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)
