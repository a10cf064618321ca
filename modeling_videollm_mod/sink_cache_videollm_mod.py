"""An attention-sink + window cache for any transformers decoder with rotary positions (Llama, Qwen2, Qwen3, Mistral
without a sliding window: the families VideoLLM-MoD builds on, used alone), as StreamingLLM: every layer keeps the
first `sink` tokens and the last `window`. (A VideoLLM-MoD model streams through its sessions, whose `CacheBudget`
does the same for frames and turns.)

    cache = SinkWindowCache(model, sink=4, window=1020)
    model.generate(input_ids, past_key_values=cache, max_new_tokens=...)     # any length, memory flat

Positions are re-indexed the way a stream needs them: keys are cached with RoPE applied, and when window tokens
go, the sink's keys are turned forward by as many positions, so that the sink sits just before the window. Attention
depends only on the distance between a query and a key, so every query sees the sink and the window at consecutive
distances, as if the kept tokens had been fed alone, while the positions of new tokens go on counting as `generate`
counts them (its `cache_position`). The streaming sessions do the same with their own ledger
(`budget_videollm_mod`, `VideoLLMMoDCache.remap_positions`), turning the kept keys back instead.

For rotary embeddings whose frequencies do not depend on the sequence length (default, linear, Llama-3 and YaRN
scaling; not "dynamic" NTK scaling), and for batches without padding.
"""

import torch
from transformers.cache_utils import Cache, DynamicLayer
from transformers.models.llama.modeling_llama import rotate_half


def rotate_keys(rotary_emb, keys: torch.Tensor, delta: torch.LongTensor) -> torch.Tensor:
    """Move cached keys to other positions: RoPE turns each frequency pair by an angle proportional to the position,
    so the key of position `p` turned by `delta` is the key of position `p + delta` (up to rounding; computed in
    float32 so that repeated moves do not drift in bf16).

    Args:
        rotary_emb: the decoder's rotary embedding module (`model.get_decoder().rotary_emb`).
        keys: (B, H, L, D) cached keys; delta: (B, L) positions to move each entry by.
    Returns:
        (B, H, L, D) the moved keys, in the keys' dtype.
    """
    cos, sin = rotary_emb(keys.float(), delta)  # (B, L, D), both scaled by attention_scaling
    scale = rotary_emb.attention_scaling
    cos, sin = (cos / scale).unsqueeze(1), (sin / scale).unsqueeze(1)  # (B, 1, L, D)
    moved = keys.float() * cos + rotate_half(keys.float()) * sin
    return moved.to(keys.dtype)


class SinkWindowLayer(DynamicLayer):
    """One layer of a `SinkWindowCache`: the first `sink` entries and the last `window`; each forward attends to
    what was held plus its own tokens, then the oldest window entries beyond `window` go and the sink turns forward
    by as many positions."""

    is_sliding = False

    def __init__(self, sink: int, window: int, rotary_emb):
        super().__init__()
        self.sink, self.window, self.rotary_emb = sink, window, rotary_emb
        self.cumulative_length = 0  # tokens fed, evicted ones included: the next token's position

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        over = keys.shape[-2] - self.sink - self.window
        if over > 0:
            sink_keys = keys[:, :, : self.sink]
            delta = torch.full((keys.shape[0], self.sink), over, dtype=torch.long, device=keys.device)
            self.keys = torch.cat([rotate_keys(self.rotary_emb, sink_keys, delta), keys[:, :, self.sink + over :]], -2)
            self.values = torch.cat([values[:, :, : self.sink], values[:, :, self.sink + over :]], -2)
        else:
            self.keys, self.values = keys, values
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The held entries and the new tokens take the last columns before the end of what was fed: all held ones
        are in the past of every new token, which see each other causally."""
        held = self.keys.shape[-2] if self.is_initialized else 0
        return held + query_length, self.cumulative_length - held

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_max_length(self) -> int:
        return self.sink + self.window

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("a sink + window cache cannot be cropped: the evicted tokens are gone")


class SinkWindowCache(Cache):
    """A cache that holds, in every layer of `model`'s decoder, its first `sink` tokens and its last `window` (see the
    module docstring); pass it as `past_key_values` to `model.generate` or to the model's forward.

    Args:
        model: a transformers causal LM with rotary positions (its decoder has `rotary_emb`).
        sink (`int`, defaults to 4): tokens kept from the start (StreamingLLM's 4).
        window (`int`, defaults to 1020): most recent tokens kept.
    """

    def __init__(self, model, sink: int = 4, window: int = 1020):
        if sink < 0 or window < 1:
            raise ValueError(f"sink={sink} must be >= 0 and window={window} >= 1")
        decoder = model.get_decoder()
        rotary_emb = getattr(decoder, "rotary_emb", None)
        if rotary_emb is None:
            raise ValueError(f"{type(model).__name__}: its decoder has no rotary embedding to re-index keys with")
        layers = model.config.get_text_config(decoder=True).num_hidden_layers
        super().__init__(layers=[SinkWindowLayer(sink, window, rotary_emb) for _ in range(layers)])


__all__ = ["SinkWindowCache", "SinkWindowLayer", "rotate_keys"]
