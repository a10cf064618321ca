"""VideoLLM-MoD: a streaming video LLM whose routed decoder layers process only the top-k vision tokens of each frame.

Frames -> SigLIP (pooled token + hp x wp pooled patch grid) -> MLP connector -> placeholders of a Llama, Mistral or
Qwen decoder (`families_videollm_mod`). In a routed layer (Mixture-of-Depths, "LayerExpert") each frame keeps its k
highest-scoring vision tokens; text and interval tokens always run. Kept tokens run through the family's unmodified
decoder layer at their original positions; the others pass through unchanged and are absent from that layer's keys,
values and cache.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import capture_outputs

from .cache_videollm_mod import VideoLLMMoDCache
from .configuration_videollm_mod import VideoLLMMoDConfig
from .families_videollm_mod import TEXT_FAMILIES, text_family
from .routing_videollm_mod import ROUTED_DECODER_LAYERS, FrameLayout, VideoLLMMoDDecoderLayer
from .sink_cache_videollm_mod import rotate_keys
from .streaming_videollm_mod import VideoLLMMoDStreamingMixin


def pool_frame_tokens(vision: BaseModelOutputWithPooling, grid: Sequence[int]) -> torch.Tensor:
    """A frame's tokens from a SigLIP output, as VideoLLM-online makes them (live1+): the pooled (attention-pooling
    head) output, then the patch grid average-pooled to `grid = (hp, wp)`, row-major.

    Args:
        vision: the vision tower's output for T frames: `last_hidden_state` (T, g * g, Dv), `pooler_output` (T, Dv).
    Returns:
        (T, 1 + hp * wp, Dv).
    """
    patches = vision.last_hidden_state  # (T, N, Dv), N = g * g
    frames, num_patches, dim = patches.shape
    side = int(round(num_patches**0.5))
    patch_grid = patches.transpose(1, 2).reshape(frames, dim, side, side)  # (T, Dv, g, g)
    pooled = F.adaptive_avg_pool2d(patch_grid, list(grid)).flatten(2).transpose(1, 2)  # (T, hp*wp, Dv)
    return torch.cat([vision.pooler_output[:, None], pooled], dim=1)  # (T, F, Dv)


class VideoLLMMoDConnector(nn.Module):
    """Vision features -> language embeddings: Linear -> exact GELU -> Linear, with biases (VideoLLM-online)."""

    def __init__(self, config: VideoLLMMoDConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, hidden, bias=True)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden, hidden, bias=True)

    def forward(self, frame_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(frame_features)))


class VideoLLMMoDPreTrainedModel(PreTrainedModel):
    config: VideoLLMMoDConfig
    base_model_prefix = "model"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = [layer.__name__ for layer in ROUTED_DECODER_LAYERS.values()] + ["SiglipEncoderLayer"]
    _skip_keys_device_placement = ["cache"]
    # Routed layers need an explicit mask over the kept subset: SDPA and eager take one, the flash kernels do not.
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _can_record_outputs = {
        "hidden_states": VideoLLMMoDDecoderLayer,
        "attentions": [family.attention for family in TEXT_FAMILIES.values()],
    }

    @classmethod
    def is_custom_code(cls) -> bool:
        # transformers guards remote `_init_weights` that write parameters in place; ours is the library's own (it
        # uses `transformers.initialization`), and under that guard the SigLIP tower would initialise differently
        # from a fresh `__init__` than when weights are missing from a checkpoint.
        return False


class VideoLLMMoDModel(VideoLLMMoDPreTrainedModel):
    """Backbone: vision tower, connector and the decoder stack of the text config's family (its stock weight names)."""

    def __init__(self, config: VideoLLMMoDConfig):
        super().__init__(config)
        # The decoder layers are not a PreTrainedModel of their own, so the attention implementation chosen for the
        # whole model does not reach `text_config` by itself.
        if config.text_config._attn_implementation is None:
            config.text_config._attn_implementation_internal = config._attn_implementation
        text = config.text_config
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.connector = VideoLLMMoDConnector(config)
        self.embed_tokens = nn.Embedding(text.vocab_size, text.hidden_size, text.pad_token_id)
        family = text_family(text)
        routed_layer = ROUTED_DECODER_LAYERS[text.model_type]
        self.layers = nn.ModuleList([routed_layer(config, layer_idx) for layer_idx in range(text.num_hidden_layers)])
        self.norm = family.norm(text.hidden_size, eps=text.rms_norm_eps)
        self.rotary_emb = family.rotary(config=text)
        self.gradient_checkpointing = False
        self.post_init()

    def init_parallel_plans(self) -> None:
        """The decoder stack keeps its family's module names, so the family's parallel plans apply as they are
        (routing works along the token axis and the router is a replicated Linear(hidden, 1)); the class has no plan
        of its own, since it serves every family, and a composite config has no base-model plan to merge."""
        super().init_parallel_plans()
        text = self.config.text_config
        self._tp_plan = {"embed_tokens": "embedding_rowwise", **(text.base_model_tp_plan or {}), **self._tp_plan}
        self._pp_plan = {**(text.base_model_pp_plan or {}), **self._pp_plan}

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module):
        self.embed_tokens = value

    @can_return_tuple
    def get_video_features(self, pixel_values_videos: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        """Encode frames with the vision tower.

        Args:
            pixel_values_videos: (T, 3, H, W) normalised frames, all videos of the batch in sequence order.
        Returns:
            The vision tower's output, with `pooler_output` replaced by the frame embeddings (T, F, hidden_size).
        """
        vision = self.vision_tower(pixel_values_videos.to(self.vision_tower.dtype), return_dict=True, **kwargs)
        vision.pooler_output = self.connector(pool_frame_tokens(vision, self.config.frame_token_pooled))
        return vision

    def rotate_cached_keys(self, keys: torch.Tensor, delta: torch.LongTensor) -> torch.Tensor:
        """Move cached keys (B, H, L, D) by `delta` (B, L) positions (`sink_cache_videollm_mod.rotate_keys`)."""
        return rotate_keys(self.rotary_emb, keys, delta)

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the placeholder positions, from `input_ids` or by comparison with the placeholder embedding."""
        return self.token_mask("video_token_id", input_ids, inputs_embeds)

    def token_mask(self, name: str, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: where the token `config.<name>` is, from `input_ids` or by comparison with its embedding."""
        token_id = getattr(self.config, name)
        if input_ids is not None:
            return input_ids == token_id
        if token_id >= self.embed_tokens.num_embeddings:
            raise ValueError(
                f"{name}={token_id} has no embedding row (vocabulary of {self.embed_tokens.num_embeddings}): pass "
                f"input_ids to locate it"
            )
        embedding = self.embed_tokens(torch.tensor(token_id, device=inputs_embeds.device))
        return (inputs_embeds == embedding).all(-1)

    def embed(self, input_ids, inputs_embeds, video_mask, pixel_values_videos, frame_features) -> torch.Tensor:
        """Text embeddings with the frames' embeddings scattered over the placeholders."""
        has_frames = pixel_values_videos is not None or frame_features is not None
        if inputs_embeds is None:
            # The placeholder may lie outside the vocabulary (converted checkpoints): embed it as id 0, then overwrite.
            inputs_embeds = self.embed_tokens(input_ids.masked_fill(video_mask, 0) if has_frames else input_ids)
        if not has_frames:
            return inputs_embeds
        if pixel_values_videos is not None:
            video_embeds = self.get_video_features(pixel_values_videos).pooler_output
        else:
            video_embeds = self.connector(frame_features.to(self.connector.linear_1.weight.dtype))
        frames, frame_tokens = video_embeds.shape[:2]
        num_placeholders = int(video_mask.sum())
        if num_placeholders != frames * frame_tokens:
            raise ValueError(
                f"the input holds {num_placeholders} placeholder tokens but {frames} frames x {frame_tokens} tokens "
                f"per frame = {frames * frame_tokens} frame embeddings were given"
            )
        video_embeds = video_embeds.to(inputs_embeds.dtype).flatten(0, 1)
        return inputs_embeds.masked_scatter(video_mask.unsqueeze(-1), video_embeds)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: VideoLLMMoDCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        frame_features: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        Args:
            input_ids: (B, L) token ids, each frame expanded to `frame_num_tokens` placeholders.
            attention_mask: (B, past + L) 1 for real tokens, 0 for padding.
            position_ids: (B, L); by default they continue from the tokens already in `cache`.
            cache: a [`VideoLLMMoDCache`] (an empty `DynamicCache` is replaced by one).
            pixel_values_videos: (T, 3, H, W) the frames of the placeholders of this call, in sequence order.
            frame_features: (T, frame_num_tokens, vision_hidden_size) pre-computed frame features instead of pixels.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("specify exactly one of input_ids or inputs_embeds")
        if pixel_values_videos is not None and frame_features is not None:
            raise ValueError("specify at most one of pixel_values_videos or frame_features")
        video_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
        skip_mask = None
        if self.config.mod_skip_interval_tokens and self.config.mod_layers:
            skip_mask = self.token_mask("frame_token_interval_id", input_ids, inputs_embeds)
        inputs_embeds = self.embed(input_ids, inputs_embeds, video_mask, pixel_values_videos, frame_features)
        if pixel_values_videos is None and frame_features is None:
            # Without frames, placeholder ids are ordinary tokens (as in transformers' VLMs): nothing to route.
            video_mask = torch.zeros_like(video_mask)

        if use_cache is None:
            use_cache = self.config.text_config.use_cache and not self.training
        if use_cache and (
            cache is None or (not getattr(cache, "is_videollm_mod_cache", False) and not cache.get_seq_length())
        ):
            cache = VideoLLMMoDCache(len(self.layers))  # generate() offers an empty DynamicCache: take ours instead
        if cache is not None and not getattr(cache, "is_videollm_mod_cache", False):
            raise ValueError(
                f"cache must be a VideoLLMMoDCache (routed layers cache subsets); got {type(cache).__name__}"
            )
        past_length = cache.get_seq_length() if cache is not None else 0
        length = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = (torch.arange(length, device=inputs_embeds.device) + past_length).unsqueeze(0)

        layout = FrameLayout.build(
            video_mask,
            attention_mask,
            position_ids,
            past_length,
            self.config.frame_num_tokens,
            self.config.mod_keep_per_frame,
            skip_mask,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                layout=layout,
                position_ids=position_ids,
                position_embeddings=position_embeddings,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )
        if cache is not None and use_cache:
            cache.seen_tokens += length
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache if use_cache else None)


class VideoLLMMoDForCausalLM(VideoLLMMoDPreTrainedModel, GenerationMixin, VideoLLMMoDStreamingMixin):
    """VideoLLM-MoD with a language-modelling head; the loss weights the per-frame decision by `stream_loss_weight`."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: VideoLLMMoDConfig):
        super().__init__(config)
        # save_pretrained writes the auto_map entry of the saved class only; name the backbone for AutoModel too.
        # The head loads through AutoModelForImageTextToText too, as transformers' video LLMs do.
        config.auto_map = {
            "AutoModel": "modeling_videollm_mod.VideoLLMMoDModel",
            "AutoModelForImageTextToText": "modeling_videollm_mod.VideoLLMMoDForCausalLM",
            **(getattr(config, "auto_map", None) or {}),
        }
        self.model = VideoLLMMoDModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module):
        self.lm_head = new_embeddings

    def get_video_features(self, pixel_values_videos: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_video_features(pixel_values_videos, **kwargs)

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and inputs.get("use_cache", True):
            # Like `pixel_values_videos`, which generate() drops itself: the frames belong to the prefill only.
            inputs.pop("frame_features", None)
        return inputs

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: VideoLLMMoDCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        frame_features: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            labels: (B, L) targets aligned with `input_ids` (shifted inside), -100 where no loss is taken.
            Other arguments: see [`VideoLLMMoDModel.forward`].
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        shift_labels = kwargs.pop("shift_labels", None)  # pre-shifted targets (sequence/context parallelism)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            pixel_values_videos=pixel_values_videos,
            frame_features=frame_features,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        if self.config.suppress_video_token_logit and self.config.video_token_id < logits.shape[-1]:
            logits = logits.index_fill(
                -1, torch.tensor([self.config.video_token_id], device=logits.device), torch.finfo(logits.dtype).min
            )

        loss = None
        if labels is not None or shift_labels is not None:
            video_mask = self.model.get_placeholder_mask(input_ids, inputs_embeds)
            loss = self.stream_loss(logits, video_mask, labels, shift_labels, num_items_in_batch)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def stream_loss(
        self,
        logits: torch.Tensor,
        video_mask: torch.Tensor,
        labels: torch.LongTensor | None = None,
        shift_labels: torch.LongTensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token cross-entropy; predictions made at placeholder positions (the per-frame decision) are weighted
        by `stream_loss_weight`; the sum is divided by the number of labelled tokens (VideoLLM-online).

        `labels` (B, L) are aligned with the inputs and shifted here; `shift_labels` (B, L) are already the target
        of each position (-100 at the end) and take precedence."""
        if shift_labels is None:
            shift_labels = F.pad(labels[:, 1:], (0, 1), value=-100)
        targets = shift_labels.to(logits.device)  # (B, L): the token each position predicts
        logits = logits[:, -targets.shape[1] :].float()  # (B, L, V)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
        weights = torch.where(video_mask[:, -targets.shape[1] :], self.config.stream_loss_weight, 1.0).flatten()
        denominator = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum().clamp(min=1)
        return (nll * weights).sum() / denominator


VideoLLMMoDConfig.register_for_auto_class()
VideoLLMMoDModel.register_for_auto_class("AutoModel")
VideoLLMMoDForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["VideoLLMMoDForCausalLM", "VideoLLMMoDModel", "VideoLLMMoDPreTrainedModel", "pool_frame_tokens"]
