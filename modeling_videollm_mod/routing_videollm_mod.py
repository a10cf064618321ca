"""The Mixture-of-Depths routing step around a decoder family's stock layer, and what every layer of one forward
shares: where the frames sit (`FrameLayout`) and the causal mask by token index over any ordered subset of the
sequence (`attention_mask_from_tags`), which is what lets a routed layer attend over the subset it keeps."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .cache_videollm_mod import VideoLLMMoDCache
from .configuration_videollm_mod import VideoLLMMoDConfig
from .families_videollm_mod import TEXT_FAMILIES, sliding_window


def causal_suffices(q_index: torch.Tensor, kv_index: torch.Tensor, kv_valid: torch.Tensor) -> bool:
    """Whether plain causal attention over the keys in their order gives every real query the keys of the tag mask:
    the keys are the queries themselves (no cached keys before them) and each row's real tokens come first
    (padding only at its end). Padding queries then see more keys than under the mask; their outputs are never used.
    """
    if q_index.shape != kv_index.shape or not torch.equal(q_index, kv_index):
        return False
    return bool((kv_valid[:, 1:] <= kv_valid[:, :-1]).all())


def attention_mask_from_tags(
    q_index: torch.Tensor,
    kv_index: torch.Tensor,
    kv_valid: torch.Tensor,
    dtype: torch.dtype,
    implementation: str,
    window: tuple[torch.Tensor, torch.Tensor, int] | None = None,
) -> torch.Tensor:
    """Causal mask by token index, for queries and keys that may be any ordered subset of the sequence.

    Args:
        q_index: (B, Q) sequence index of each query.
        kv_index, kv_valid: (B, K) sequence index of each key, and whether it is a real (non-padding) token.
        window: for a sliding-window layer, `(q_position (B, Q), kv_position (B, K), span)`: a query sees the keys
            less than `span` positions back, as the families' own masks do on an unpadded sequence. By position, not
            index: a batch of streams pads rows in the middle, which the row's own positions do not count.
    Returns:
        (B, 1, Q, K): bool for SDPA (True = attend), additive float for eager; None for SDPA where its own causal
        mask gives every real query the same keys (`causal_suffices`), as in training on a right-padded batch, so
        that no (B, 1, Q, K) mask is built, converted and kept for the backward pass by every layer.
    """
    if implementation == "sdpa" and window is None and causal_suffices(q_index, kv_index, kv_valid):
        return None
    allowed = (kv_index[:, None, :] <= q_index[:, :, None]) & kv_valid[:, None, :]  # (B, Q, K)
    if window is not None:
        q_position, kv_position, span = window
        allowed &= q_position[:, :, None] - kv_position[:, None, :] < span
    # A padding query may see no key at all; SDPA would give NaN rows that later leak through 0 * NaN, so let such
    # rows see every key (their outputs are never used).
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    allowed = allowed[:, None]  # (B, 1, Q, K)
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


@dataclass
class FrameLayout:
    """Where the frames sit in a batch of token sequences: computed once per forward, shared by every layer.

    Attributes:
        video_mask: (B, L) bool, True at placeholder (vision) tokens.
        frame_slots: (B, Nf, F) long, sequence index of each token of each frame; `L` (a dummy column) for the
            missing frames of rows that hold fewer than `Nf` frames.
        token_index: (B, L) long, index of each token in the whole sequence (past tokens included).
        token_valid: (B, L) bool, False at padding.
        token_position: (B, L) long, position (RoPE) of each token.
        kept_length: tokens per row that a routed layer processes (the most over the batch).
        num_frames: frames in the batch.
        keep_per_frame: vision tokens of each frame that a routed layer processes (the config's, read at each
            forward, so that a training schedule can anneal it).
        skip_mask: (B, L) bool, True at the non-vision tokens a routed layer skips too (the frame-interval tokens
            with `mod_skip_interval_tokens`), or None.
        num_skipped: how many such tokens the batch holds.
    """

    video_mask: torch.Tensor
    frame_slots: torch.Tensor
    token_index: torch.Tensor
    token_valid: torch.Tensor
    token_position: torch.Tensor
    kept_length: int
    num_frames: int
    keep_per_frame: int
    skip_mask: torch.Tensor | None = None
    num_skipped: int = 0
    dense_masks: dict = field(default_factory=dict)  # sliding window (None: full) -> the dense layers' mask

    @classmethod
    def build(
        cls,
        video_mask: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor,
        past_length: int,
        frame_num_tokens: int,
        keep_per_frame: int,
        skip_mask: torch.Tensor | None = None,
    ) -> "FrameLayout":
        batch, length = video_mask.shape
        device = video_mask.device
        skip_mask = skip_mask & ~video_mask if skip_mask is not None else torch.zeros_like(video_mask)
        if attention_mask is None:
            token_valid = torch.ones(batch, length, dtype=torch.bool, device=device)
        else:
            if attention_mask.dim() != 2:
                raise ValueError(
                    f"attention_mask must be 2-D (batch, length); got shape {tuple(attention_mask.shape)}"
                )
            token_valid = attention_mask[:, -length:].bool()
        # One host sync per forward (not per layer): tensor shapes below depend on these counts.
        counts, skipped, valid = torch.stack([video_mask.sum(-1), skip_mask.sum(-1), token_valid.sum(-1)]).tolist()
        uneven = [c for c in counts if c % frame_num_tokens]
        if uneven:
            raise ValueError(
                f"each row must hold whole frames of {frame_num_tokens} placeholder tokens; "
                f"got {counts} placeholders per row"
            )
        max_frames = max(counts) // frame_num_tokens
        # Padding is never kept: a routed layer computes the longest row's kept tokens, not its padding.
        kept_length = max(
            v - c - n + keep_per_frame * (c // frame_num_tokens)
            for v, c, n in zip(valid, counts, skipped, strict=True)
        )

        # Vision tokens first, each row in sequence order: (B, L) -> the first Nf * F are the frames' tokens.
        order = torch.argsort((~video_mask).to(torch.int8), dim=-1, stable=True)[:, : max_frames * frame_num_tokens]
        present = torch.arange(order.shape[1], device=device) < video_mask.sum(-1, keepdim=True)
        frame_slots = order.masked_fill(~present, length).view(batch, max_frames, frame_num_tokens)  # (B, Nf, F)

        token_index = (torch.arange(length, device=device) + past_length).expand(batch, -1)
        token_position = position_ids.expand(batch, -1)
        return cls(
            video_mask,
            frame_slots,
            token_index,
            token_valid,
            token_position,
            kept_length,
            sum(counts) // frame_num_tokens,
            keep_per_frame,
            skip_mask if sum(skipped) else None,
            sum(skipped),
        )


class VideoLLMMoDDecoderLayer:
    """The routing step around a family's stock decoder layer (mixed in before it, `ROUTED_DECODER_LAYERS`): dense
    layers are the stock layer; a routed layer adds score -> top-k per frame -> gather -> layer -> weighted scatter."""

    def __init__(self, config: VideoLLMMoDConfig, layer_idx: int):
        super().__init__(config.text_config, layer_idx)
        self.layer_idx = layer_idx
        self.window = sliding_window(config.text_config, layer_idx)
        self.routed = layer_idx in config.mod_layers
        self.selection = config.mod_selection
        self.router_scaling = config.mod_router_scaling
        if self.routed and self.selection == "router" and config.mod_keep_per_frame > 0:
            self.router = nn.Linear(config.text_config.hidden_size, 1, bias=True)

    def forward(
        self,
        hidden_states: torch.Tensor,
        layout: FrameLayout,
        position_ids: torch.LongTensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache: VideoLLMMoDCache | None = None,
        use_cache: bool | None = False,
        **kwargs,
    ) -> torch.Tensor:
        if not self.routed or (layout.num_frames == 0 and layout.num_skipped == 0):
            return self.dense_forward(
                hidden_states, layout, position_ids, position_embeddings, cache, use_cache, **kwargs
            )
        if layout.kept_length == 0:  # every token skips this layer (frames and intervals only, nothing kept)
            return hidden_states

        batch, _, hidden = hidden_states.shape
        router = getattr(self, "router", None)
        with torch.no_grad():  # ranking needs no gradient, so the full-length input is not kept for one
            scores = router(hidden_states).squeeze(-1) if router is not None else None  # (B, L)
        kept = self.select(scores, layout)  # (B, L)
        # Kept tokens first, in sequence order; rows that keep fewer tokens are padded with skipped ones.
        order = torch.argsort((~kept).to(torch.int8), dim=-1, stable=True)[:, : layout.kept_length]  # (B, Lk)
        is_kept = kept.gather(1, order)  # (B, Lk)
        gather_idx = order.unsqueeze(-1).expand(-1, -1, hidden)  # (B, Lk, D)
        # by indexing, not `gather`, whose backward pass would keep the full-length input (indexing keeps its shape)
        sub_states = hidden_states[torch.arange(batch, device=order.device)[:, None], order]  # (B, Lk, D)
        sub_positions = layout.token_position.gather(1, order)  # (B, Lk)
        cos, sin = (
            e.expand(batch, -1, -1).gather(1, order.unsqueeze(-1).expand(-1, -1, e.shape[-1]))
            for e in position_embeddings
        )

        q_index = layout.token_index.gather(1, order)
        q_valid = layout.token_valid.gather(1, order) & is_kept
        kv_index, kv_valid, kv_position = self.tag_cache(cache, use_cache, q_index, q_valid, sub_positions)
        mask = attention_mask_from_tags(
            q_index,
            kv_index,
            kv_valid,
            sub_states.dtype,
            self.self_attn.config._attn_implementation,
            (sub_positions, kv_position, self.window) if self.window else None,
        )
        out = super().forward(
            sub_states,
            attention_mask=mask,
            position_ids=sub_positions,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=(cos, sin),
            **kwargs,
        )
        if router is not None and self.router_scaling:
            # MoD-style x + w * f(x), w = 2 sigmoid(score): the router's only gradient path, and 1 for a fresh router.
            # Scored again on the kept tokens, whose states the layer keeps for its backward pass anyway.
            gate_scores = router(sub_states).squeeze(-1)
            gate = torch.where(layout.video_mask.gather(1, order), 2 * torch.sigmoid(gate_scores), 1.0)
            out = sub_states + gate.unsqueeze(-1).to(out.dtype) * (out - sub_states)
        out = torch.where(is_kept.unsqueeze(-1), out, sub_states)  # padding entries stay as they were
        return hidden_states.scatter(1, gather_idx, out)

    def dense_forward(self, hidden_states, layout, position_ids, position_embeddings, cache, use_cache, **kwargs):
        kv_index, kv_valid, kv_position = self.tag_cache(
            cache, use_cache, layout.token_index, layout.token_valid, layout.token_position
        )
        # Dense layers cache every token, so those with the same window share one mask; a routed layer's cache holds
        # a subset of its own.
        if not self.routed and self.window in layout.dense_masks:
            mask = layout.dense_masks[self.window]
        else:
            mask = attention_mask_from_tags(
                layout.token_index,
                kv_index,
                kv_valid,
                hidden_states.dtype,
                self.self_attn.config._attn_implementation,
                (layout.token_position, kv_position, self.window) if self.window else None,
            )
            if not self.routed:
                layout.dense_masks[self.window] = mask
        return super().forward(
            hidden_states,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )

    def tag_cache(self, cache, use_cache, q_index, q_valid, q_position):
        """Record which tokens this layer caches; return the tags of every key it attends to (past + new): column,
        validity and position."""
        if cache is None or not use_cache:
            return q_index, q_valid, q_position
        return cache.layers[self.layer_idx].tag(q_index, q_valid, q_position)

    def select(self, scores: torch.Tensor | None, layout: FrameLayout) -> torch.Tensor:
        """(B, L) bool: every non-vision token (but those of `layout.skip_mask`), plus the top-k vision tokens of
        each frame."""
        always = ~layout.video_mask if layout.skip_mask is None else ~(layout.video_mask | layout.skip_mask)
        always = always & layout.token_valid
        slots = layout.frame_slots  # (B, Nf, F)
        batch, num_slots, frame_tokens = slots.shape
        k = layout.keep_per_frame
        if k == 0 or num_slots == 0:
            return always
        if self.selection == "router":
            padded = F.pad(scores.detach(), (0, 1))  # column L is the dummy slot of missing frames
            frame_scores = padded.gather(1, slots.flatten(1)).view_as(slots).float()
            top = frame_scores.topk(k, dim=-1).indices  # (B, Nf, k)
        elif self.selection == "random":
            top = torch.rand(slots.shape, device=slots.device).topk(k, dim=-1).indices
        else:  # uniform: k evenly spaced tokens, the centres of k equal parts of the frame
            centres = (torch.arange(k, device=slots.device) * 2 + 1) * frame_tokens // (2 * k)
            top = centres.expand(batch, num_slots, -1)
        chosen = slots.gather(2, top).flatten(1)  # (B, Nf * k)
        kept = F.pad(always, (0, 1)).scatter(1, chosen, True)
        return kept[:, :-1]


class VideoLLMMoDLlamaDecoderLayer(VideoLLMMoDDecoderLayer, TEXT_FAMILIES["llama"].decoder_layer):
    pass


class VideoLLMMoDMistralDecoderLayer(VideoLLMMoDDecoderLayer, TEXT_FAMILIES["mistral"].decoder_layer):
    pass


class VideoLLMMoDQwen2DecoderLayer(VideoLLMMoDDecoderLayer, TEXT_FAMILIES["qwen2"].decoder_layer):
    pass


class VideoLLMMoDQwen3DecoderLayer(VideoLLMMoDDecoderLayer, TEXT_FAMILIES["qwen3"].decoder_layer):
    pass


ROUTED_DECODER_LAYERS = {
    "llama": VideoLLMMoDLlamaDecoderLayer,
    "mistral": VideoLLMMoDMistralDecoderLayer,
    "qwen2": VideoLLMMoDQwen2DecoderLayer,
    "qwen3": VideoLLMMoDQwen3DecoderLayer,
}
