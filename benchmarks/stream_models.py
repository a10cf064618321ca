"""Models and inputs shared by the streaming benchmarks: the benchmark-size model (`presets.benchmark_config`), made
to stay silent so that only frames are timed, a processor for it."""

import argparse

import torch

from modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
from videollm_mod.presets import benchmark_config
from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids


class SilentHead(torch.nn.Module):
    """`lm_head` with the interval token's logit raised far above the rest: the model never speaks."""

    def __init__(self, lm_head: torch.nn.Linear, interval_id: int):
        super().__init__()
        self.lm_head, self.interval_id = lm_head, interval_id

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden_states)
        return logits.index_fill(-1, torch.tensor([self.interval_id], device=logits.device), 1e4)


def benchmark_processor() -> VideoLLMMoDProcessor:
    tokenizer = build_stream_tokenizer(["#C C sees a red circle appear"], vocab_size=200)
    return VideoLLMMoDProcessor(VideoLLMMoDFrameProcessor(size=24), tokenizer, frame_num_tokens=10)


def silent_benchmark_model(processor, mod_layers=None, device: str = "cpu", dtype=torch.float32):
    """The benchmark model (8 layers x 512, odd layers routed at r = 0.2; `mod_layers=[]`: dense), always silent."""
    torch.manual_seed(0)
    config = benchmark_config(mod_layers=mod_layers, **stream_token_ids(processor.tokenizer))
    model = VideoLLMMoDForCausalLM(config).eval()
    model.lm_head = SilentHead(model.lm_head, config.frame_token_interval_id)
    return model.to(device=device, dtype=dtype)


def frame_features(model, num_frames: int, seed: int = 0) -> torch.Tensor:
    """(T, frame_num_tokens, vision hidden) random pre-computed frame features."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_frames, config.frame_num_tokens, config.vision_config.hidden_size, generator=generator)


def parse_with_threads(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse `argv` with a `--threads` option added, and apply it (torch's thread count)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's; 1 steadies ratios on a busy machine)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
