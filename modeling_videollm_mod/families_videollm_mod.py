"""The decoder families VideoLLM-MoD routes over: one row per `text_config.model_type`.

Each family keeps its stock decoder layer (attention with its biases or q/k norms, MLP, norms), final norm and rotary
embedding, so a stock checkpoint of that family loads into the language part under its own weight names. A new family
is one row here, its `model_type` in `configuration_videollm_mod.TEXT_MODEL_TYPES` (which the config checks
without importing any model code) and its tests.
"""

from dataclasses import dataclass

from torch import nn
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.models.mistral.modeling_mistral import (
    MistralAttention,
    MistralDecoderLayer,
    MistralRMSNorm,
    MistralRotaryEmbedding,
)
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2Attention,
    Qwen2DecoderLayer,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3Attention,
    Qwen3DecoderLayer,
    Qwen3RMSNorm,
    Qwen3RotaryEmbedding,
)


@dataclass(frozen=True)
class TextFamily:
    """The stock classes of one decoder family."""

    decoder_layer: type[nn.Module]
    attention: type[nn.Module]
    norm: type[nn.Module]
    rotary: type[nn.Module]


TEXT_FAMILIES = {
    "llama": TextFamily(LlamaDecoderLayer, LlamaAttention, LlamaRMSNorm, LlamaRotaryEmbedding),
    "mistral": TextFamily(MistralDecoderLayer, MistralAttention, MistralRMSNorm, MistralRotaryEmbedding),
    # Qwen2.5 checkpoints are `qwen2` too.
    "qwen2": TextFamily(Qwen2DecoderLayer, Qwen2Attention, Qwen2RMSNorm, Qwen2RotaryEmbedding),
    "qwen3": TextFamily(Qwen3DecoderLayer, Qwen3Attention, Qwen3RMSNorm, Qwen3RotaryEmbedding),
}


def text_family(text_config) -> TextFamily:
    return TEXT_FAMILIES[text_config.model_type]  # the config refused any other model_type when it was made


def sliding_window(text_config, layer_idx: int) -> int | None:
    """How many tokens back layer `layer_idx` attends (None: the whole context), as the family's own masks decide:
    per layer from `layer_types` (Qwen2, Qwen3 with `use_sliding_window`), else `sliding_window` for every layer
    (Mistral); Llama has neither."""
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is not None and layer_types[layer_idx] != "sliding_attention":
        return None
    return getattr(text_config, "sliding_window", None)
