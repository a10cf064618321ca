"""Configuration of VideoLLM-MoD: SigLIP frames -> MLP connector -> a Llama, Mistral or Qwen decoder with
Mixture-of-Depths layers."""

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "videollm_mod"  # what `config.json` says of a VideoLLM-MoD checkpoint
MOD_SELECTIONS = ("router", "random", "uniform")
# Decoder families the routed layers wrap (`families_videollm_mod.TEXT_FAMILIES`); Qwen2.5 is `qwen2`.
TEXT_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@strict
class VideoLLMMoDConfig(PreTrainedConfig):
    r"""
    Configuration of a [`VideoLLMMoDForCausalLM`]: a streaming video LLM (VideoLLM-online lineage) in which the decoder
    layers listed in `mod_layers` let only the top-k vision tokens of each frame through (VideoLLM-MoD, arXiv
    2408.16730). The defaults describe the released layout: Llama text model, SigLIP-L/16-384 vision tower, 10 tokens
    per frame, interleaved (odd) routed layers, keep ratio 0.2.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            The decoder: a config of one of `TEXT_MODEL_TYPES` (Llama, Mistral, Qwen2 / Qwen2.5, Qwen3); default
            `LlamaConfig()`.
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            The frame encoder (default SigLIP-L/16 at 384 px).
        video_token_id (`int`, *optional*, defaults to 32000):
            The placeholder id that the processor expands to `frame_num_tokens` ids per frame.
        frame_token_interval_id (`int`, *optional*):
            The interval token between frames (`,` in live1+). Its probability after the last token of a frame is the
            "stay silent" probability of the streaming decision.
        stream_response_token_id (`int`, *optional*):
            The token that opens a reply after a frame (`]\n`, 933 in the Llama-3 vocabulary).
        frame_token_pooled (`list[int]`, *optional*, defaults to `[3, 3]`):
            `[hp, wp]`: the patch grid of each frame is average-pooled to `hp x wp` tokens (row-major), placed after
            the pooled (attention-pooling head) token, so `frame_num_tokens = 1 + hp * wp`.
        stream_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the cross-entropy at positions whose input is a placeholder (the per-frame speak/stay-silent
            decision, carried by the last placeholder of each frame).
        suppress_video_token_logit (`bool`, *optional*, defaults to `True`):
            Set the placeholder's logit to the dtype minimum, so that the placeholder (never a target) does not
            take softmax mass: the streaming threshold then sees the same distribution as the original model,
            whose placeholder lay outside its vocabulary.
        mod_layers (`list[int]`, *optional*):
            Decoder layers that route vision tokens. `None` means the interleaved odd layers (1, 3, 5, ...); `[]`
            means a dense model (VideoLLM-online).
        mod_keep_ratio (`float`, *optional*, defaults to 0.2):
            `r` in [0, 1]: each frame keeps `k = ceil(r * frame_num_tokens)` vision tokens in a routed layer. `0`
            skips every vision token (the LayerSkip / EarlyExit baselines).
        mod_selection (`str`, *optional*, defaults to `"router"`):
            `"router"`: a learned `Linear(hidden, 1)` scores each vision token from the layer's input; `"random"`:
            k random tokens per frame; `"uniform"`: k evenly spaced tokens per frame.
        mod_router_scaling (`bool`, *optional*, defaults to `True`):
            With the learned router, scale the block's update of each kept vision token by `2 * sigmoid(score)`
            (the router's only gradient path; MoD-paper style `x + w * f(x)`, doubled so that a fresh router, score
            ~ 0, starts from the dense layer's output). Off: kept tokens get the plain layer output.
        mod_skip_interval_tokens (`bool`, *optional*, defaults to `False`):
            In routed layers, the frame-interval tokens (every `frame_token_interval_id`) skip the layer too, as the
            official code's `dropall` layers do. With `mod_keep_ratio=0` this gives its LayerSkip (odd layers) and
            EarlyExit (every layer from some depth on) baselines; Mixture-of-Depths itself keeps them.
        trained_stream_length (`int`, *optional*):
            Tokens of a typical stream the model was trained on (the median over its training rows, each counted per
            token), written by the training recipe. A model degrades on contexts longer than it learned, so streaming
            sessions keep at most this many tokens of a stream in their cache by default (`CacheBudget`); `None`: the
            model's context.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether `lm_head` shares the input embedding matrix.
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="siglip_vision_model",
            init_kwargs={
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "image_size": 384,
                "patch_size": 16,
            },
        ),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    video_token_id: int = 32000
    frame_token_interval_id: int | None = None
    stream_response_token_id: int | None = None
    frame_token_pooled: list[int] | tuple[int, int] = (3, 3)
    stream_loss_weight: float = 1.0
    suppress_video_token_logit: bool = True
    mod_layers: list[int] | None = None
    mod_keep_ratio: float | int = 0.2
    mod_selection: str = "router"
    mod_router_scaling: bool = True
    mod_skip_interval_tokens: bool = False
    trained_stream_length: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.frame_token_pooled = list(self.frame_token_pooled)
        num_layers = self.text_config.num_hidden_layers
        if self.mod_layers is None:
            self.mod_layers = list(range(1, num_layers, 2))
        self.mod_layers = sorted(set(self.mod_layers))
        self.validate_mod()

    def validate_mod(self):
        """Raise a ValueError naming the field and the value for any Mixture-of-Depths setting that cannot work."""
        if self.text_config.model_type not in TEXT_MODEL_TYPES:
            raise ValueError(
                f"text_config.model_type={self.text_config.model_type!r} is not supported: the decoder must be one of "
                f"{', '.join(TEXT_MODEL_TYPES)}"
            )
        num_layers = self.text_config.num_hidden_layers
        bad = [i for i in self.mod_layers if not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"mod_layers={self.mod_layers}: layer indices {bad} are outside [0, {num_layers - 1}]")
        if not 0 <= self.mod_keep_ratio <= 1:
            raise ValueError(f"mod_keep_ratio={self.mod_keep_ratio} must lie in [0, 1]")
        if self.mod_selection not in MOD_SELECTIONS:
            raise ValueError(f"mod_selection={self.mod_selection!r} must be one of {MOD_SELECTIONS}")
        if self.mod_skip_interval_tokens and self.mod_layers and self.frame_token_interval_id is None:
            raise ValueError("mod_skip_interval_tokens=True needs frame_token_interval_id (the token to skip)")
        if self.trained_stream_length is not None and self.trained_stream_length < 1:
            raise ValueError(f"trained_stream_length={self.trained_stream_length} must be a positive number of tokens")
        if len(self.frame_token_pooled) != 2 or min(self.frame_token_pooled) < 1:
            raise ValueError(f"frame_token_pooled={self.frame_token_pooled} must be two positive sizes [hp, wp]")

    @property
    def frame_num_tokens(self) -> int:
        """Tokens per frame: the pooled token + the `hp x wp` pooled patch grid."""
        hp, wp = self.frame_token_pooled
        return 1 + hp * wp

    @property
    def mod_keep_per_frame(self) -> int:
        """`k = ceil(r * frame_num_tokens)`: vision tokens of each frame that a routed layer processes."""
        # round() first so that e.g. 0.3 * 10 = 3.0000000000000004 does not become 4.
        return math.ceil(round(self.mod_keep_ratio * self.frame_num_tokens, 6))


__all__ = ["TEXT_MODEL_TYPES", "VideoLLMMoDConfig"]
