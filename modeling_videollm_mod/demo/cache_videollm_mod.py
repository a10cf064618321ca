"""KV cache whose layers hold different token subsets (Mixture-of-Depths), each entry tagged with its origin."""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class TaggedLayer(DynamicLayer):
    """A `DynamicLayer` that also remembers, for each cached entry, its index in the full token sequence and
    whether it is a real token (not padding). Routed layers cache only the tokens they processed, so attention masks,
    cropping and eviction must go by these tags, never by the layer's length."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.token_index = None  # (B, L_i) long: index of each entry in the full sequence
        self.token_valid = None  # (B, L_i) bool: False for padding entries

    def tag(self, token_index: torch.Tensor, token_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the tags of the entries about to be cached; return the tags of past + new entries."""
        if self.token_index is not None:
            token_index = torch.cat([self.token_index, token_index], dim=-1)
            token_valid = torch.cat([self.token_valid, token_valid], dim=-1)
        self.token_index, self.token_valid = token_index, token_valid
        return token_index, token_valid

    def keep_entries(self, keep: torch.Tensor) -> None:
        """Keep the entries where `keep` (B, L_i) is True; every row must keep the same number of entries."""
        if self.token_index is None:
            return
        counts = keep.sum(-1)
        if bool((counts != counts[0]).any()):
            raise ValueError(f"cannot crop rows of the cache to different lengths ({counts.tolist()})")
        cols = keep.nonzero()[:, 1].view(keep.shape[0], -1)  # (B, kept) in original order
        self.token_index = self.token_index.gather(1, cols)
        self.token_valid = self.token_valid.gather(1, cols)
        if self.is_initialized and self.keys.numel():
            idx = cols[:, None, :, None].expand(-1, self.keys.shape[1], -1, self.keys.shape[-1])
            self.keys, self.values = self.keys.gather(2, idx), self.values.gather(2, idx)

    def reset(self) -> None:
        super().reset()
        self.token_index = self.token_valid = None

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("crop the whole VideoLLMMoDCache: routed layers crop by token index")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.token_index is not None:
            self.token_index = self.token_index.index_select(0, beam_idx.to(self.token_index.device))
            self.token_valid = self.token_valid.index_select(0, beam_idx.to(self.token_valid.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.token_index is not None:
            self.token_index = self.token_index.repeat_interleave(repeats, dim=0)
            self.token_valid = self.token_valid.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.token_index is not None:
            self.token_index, self.token_valid = self.token_index[indices], self.token_valid[indices]


class VideoLLMMoDCache(DynamicCache):
    """`DynamicCache` for VideoLLM-MoD. Layers may hold different lengths (a routed layer caches only text and the
    kept vision tokens), so the sequence length is a running counter of the tokens fed, and cropping goes by each
    entry's token index.

    Args:
        num_hidden_layers (`int`): number of decoder layers.
    """

    is_videollm_mod_cache = True  # duck-typed marker: remote code must not `isinstance`-check across module copies

    def __init__(self, num_hidden_layers: int):
        super().__init__()
        self.layers = [TaggedLayer() for _ in range(num_hidden_layers)]
        self.layer_class_to_replicate = None
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int | None = None) -> int:
        """Tokens fed so far (what `generate` and position ids need); with `layer_idx`, that layer's cached length."""
        if layer_idx is None:
            return self.seen_tokens
        return super().get_seq_length(layer_idx)

    def crop(self, max_length: int) -> None:
        """Keep the first `max_length` tokens of the sequence (negative: drop the last `-max_length`), in every
        layer by token index."""
        if max_length < 0:
            max_length = self.seen_tokens + max_length
        if max_length >= self.seen_tokens:
            return
        for layer in self.layers:
            if layer.token_index is not None:
                layer.keep_entries(layer.token_index < max_length)
        self.seen_tokens = max_length

    def evict(self, sink_tokens: int, window_tokens: int) -> None:
        """Bound the cache for long streams: keep the first `sink_tokens` (attention sink) and the last
        `window_tokens` of the sequence, in every layer by token index. Positions (RoPE) are unchanged."""
        start = self.seen_tokens - window_tokens
        for layer in self.layers:
            if layer.token_index is not None:
                layer.keep_entries((layer.token_index < sink_tokens) | (layer.token_index >= start))

    def reset(self) -> None:
        super().reset()
        self.seen_tokens = 0


__all__ = ["VideoLLMMoDCache"]
