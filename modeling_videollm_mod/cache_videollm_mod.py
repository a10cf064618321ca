"""KV cache whose layers hold different token subsets (Mixture-of-Depths), each entry tagged with its origin.

Every entry of every layer carries three tags: its column (`token_index`: where it was fed in the sequence of the
batch, shared by the rows; masks go by it), whether it is a real token (`token_valid`) and its position (the RoPE
position its key was rotated with, counted per row). Cropping, per-row cropping and eviction (a bounded cache for
long streams, driven by `streaming_videollm_mod`) go by these tags, never by a layer's length.
"""

from collections.abc import Callable

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class TaggedLayer(DynamicLayer):
    """A `DynamicLayer` that also remembers, for each cached entry, its column in the sequence, whether it is a real
    token (not padding) and its position. Routed layers cache only the tokens they processed, so attention masks,
    cropping and eviction must go by these tags, never by the layer's length."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.token_index = None  # (B, L_i) long: column of each entry in the sequence
        self.token_valid = None  # (B, L_i) bool: False for padding entries
        self.token_position = None  # (B, L_i) long: RoPE position of each entry's key

    def tag(
        self, token_index: torch.Tensor, token_valid: torch.Tensor, token_position: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append the tags of the entries about to be cached; return the column, validity and position tags of past +
        new."""
        if self.token_index is not None:
            token_index = torch.cat([self.token_index, token_index], dim=-1)
            token_valid = torch.cat([self.token_valid, token_valid], dim=-1)
            token_position = torch.cat([self.token_position, token_position], dim=-1)
        self.token_index, self.token_valid, self.token_position = token_index, token_valid, token_position
        return token_index, token_valid, token_position

    def keep_entries(self, keep: torch.Tensor) -> None:
        """Keep the valid entries where `keep` (B, L_i) is True, in order. Rows that keep fewer entries than others
        are left-padded with invalid entries (column -1), so every row holds as many as the row that keeps most."""
        if self.token_index is None:
            return
        keep = keep & self.token_valid
        if bool(keep.all()):
            return
        length = int(keep.sum(-1).max())
        # stable sort puts the dropped entries first, the kept ones last and in order: (B, L_i) -> (B, length)
        cols = torch.argsort(keep.to(torch.int8), dim=-1, stable=True)[:, keep.shape[-1] - length :]
        self.token_valid = keep.gather(1, cols)
        self.token_index = self.token_index.gather(1, cols).masked_fill(~self.token_valid, -1)
        self.token_position = self.token_position.gather(1, cols)
        if self.is_initialized and self.keys.numel():
            idx = cols[:, None, :, None].expand(-1, self.keys.shape[1], -1, self.keys.shape[-1])
            self.keys, self.values = self.keys.gather(2, idx), self.values.gather(2, idx)

    def valid_bytes(self) -> torch.Tensor:
        """(B,) bytes of keys and values held for the real entries of each row."""
        if self.token_valid is None or not self.is_initialized or not self.keys.numel():
            return torch.zeros(0 if self.token_valid is None else self.token_valid.shape[0], dtype=torch.long)
        per_entry = 2 * self.keys.shape[1] * self.keys.shape[-1] * self.keys.element_size()
        return self.token_valid.sum(-1).cpu() * per_entry

    def reset(self) -> None:
        super().reset()
        self.token_index = self.token_valid = self.token_position = None

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("crop the whole VideoLLMMoDCache: routed layers crop by token index")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.token_index is not None:
            beam_idx = beam_idx.to(self.token_index.device)
            self.token_index, self.token_valid, self.token_position = (
                tag.index_select(0, beam_idx) for tag in (self.token_index, self.token_valid, self.token_position)
            )

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.token_index is not None:
            self.token_index, self.token_valid, self.token_position = (
                tag.repeat_interleave(repeats, dim=0)
                for tag in (self.token_index, self.token_valid, self.token_position)
            )

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.token_index is not None:
            self.token_index, self.token_valid, self.token_position = (
                tag[indices] for tag in (self.token_index, self.token_valid, self.token_position)
            )


class VideoLLMMoDCache(DynamicCache):
    """`DynamicCache` for VideoLLM-MoD. Layers may hold different lengths (a routed layer caches only text and the
    kept vision tokens), so the sequence length is a running counter of the columns fed, and cropping and eviction
    go by each entry's tags.

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
        """Columns fed so far (what `generate` and position ids need); with `layer_idx`, that layer's cached length."""
        if layer_idx is None:
            return self.seen_tokens
        return super().get_seq_length(layer_idx)

    def crop(self, max_length: int) -> None:
        """Keep the first `max_length` columns of the sequence (negative: drop the last `-max_length`), in every
        layer by token index."""
        if max_length < 0:
            max_length = self.seen_tokens + max_length
        if max_length >= self.seen_tokens:
            return
        for layer in self.layers:
            if layer.token_index is not None:
                layer.keep_entries(layer.token_index < max_length)
        self.seen_tokens = max_length

    def remap_positions(
        self,
        position_map: torch.Tensor,
        rotate_keys: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Keep, in every row and layer, the entries whose position `p` has `position_map[row, p] >= 0`, and move
        them to that position; the others (and padding) are dropped. What one row drops is independent of the
        others: rows left shorter are padded on the left. Columns are renumbered so that each row's entries end at
        the last column, which bounds `get_seq_length()` by the longest row.

        Args:
            position_map: (B, P) long, the new position of each old position `p < P` of each row, or -1 to drop it.
                Every cached position must be below `P`.
            rotate_keys: `(keys (B, H, L, D), delta (B, L)) -> keys` rotating cached keys (RoPE applied) by `delta`
                positions; needed when positions move (keys are cached after RoPE), None when they stay.
        """
        kept = position_map >= 0  # (B, P)
        counts = kept.sum(-1, keepdim=True)  # (B, 1)
        width = int(counts.max()) if counts.numel() else 0
        # the column of each kept position: its rank in its row, right-aligned on the longest row
        column_map = torch.where(kept, kept.cumsum(-1) - 1 + (width - counts), -1)
        for layer in self.layers:
            if layer.token_index is None:
                continue
            # positions outside the map (padding, or entries fed past a row's end) are dropped
            inside = (layer.token_position >= 0) & (layer.token_position < position_map.shape[-1])
            old = layer.token_position.clamp(0, position_map.shape[-1] - 1)
            new = torch.where(inside, position_map.gather(1, old), -1)  # (B, L_i)
            if rotate_keys is not None and layer.is_initialized and layer.keys.numel():
                delta = torch.where(layer.token_valid & (new >= 0), new - layer.token_position, 0)
                if bool(delta.any()):
                    layer.keys = rotate_keys(layer.keys, delta)
            layer.token_index = column_map.gather(1, old)
            layer.token_position = new
            layer.keep_entries(new >= 0)
        self.seen_tokens = width

    def valid_bytes(self) -> torch.Tensor:
        """(B,) bytes of keys and values held for the real entries of each row, over all layers."""
        held = [layer.valid_bytes() for layer in self.layers if layer.token_valid is not None]
        return sum(held[1:], held[0]) if held else torch.zeros(0, dtype=torch.long)

    def reset(self) -> None:
        super().reset()
        self.seen_tokens = 0


__all__ = ["VideoLLMMoDCache"]
