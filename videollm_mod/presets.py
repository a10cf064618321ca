"""Configurations built in code: tiny ones for tests, a mid-size one for benchmarks, and the released full size.

Tooling (nothing here is copied next to the weights).
"""

from modeling_videollm_mod.configuration_videollm_mod import VideoLLMMoDConfig

# Ids of the tiny vocabularies used in tests: 0 pad, 1 bos, 2 eos, then the stream tokens.
TINY_IDS = {"pad": 0, "bos": 1, "eos": 2, "video": 10, "interval": 11, "response": 12}


def tiny_config(
    num_hidden_layers: int = 4,
    hidden_size: int = 32,
    vocab_size: int = 99,
    image_size: int = 24,
    intermediate_size: int | None = None,
    text_model_type: str = "llama",
    text_overrides: dict | None = None,
    **overrides,
) -> VideoLLMMoDConfig:
    """A VideoLLM-MoD small enough for CPU tests: a text decoder of `text_model_type` (one of `TEXT_MODEL_TYPES`,
    its config updated with `text_overrides`), SigLIP vision (6x6 patches -> 10 tokens per frame)."""
    text_config = {
        "model_type": text_model_type,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 2 * hidden_size + 5,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "pad_token_id": TINY_IDS["pad"],
        "bos_token_id": TINY_IDS["bos"],
        "eos_token_id": TINY_IDS["eos"],
        **(text_overrides or {}),
    }
    # Qwen3's default head width is 128 whatever the model's width; the others divide the width among the heads.
    text_config.setdefault("head_dim", hidden_size // text_config["num_attention_heads"])
    vision_config = {
        "model_type": "siglip_vision_model",
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size + 5,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": image_size // 6,
    }
    kwargs = {
        "video_token_id": TINY_IDS["video"],
        "frame_token_interval_id": TINY_IDS["interval"],
        "stream_response_token_id": TINY_IDS["response"],
        **overrides,
    }
    return VideoLLMMoDConfig(text_config=text_config, vision_config=vision_config, **kwargs)


def benchmark_config(**overrides) -> VideoLLMMoDConfig:
    """Mid-size model for CPU efficiency benchmarks: the paper's layout (10 tokens per frame, odd layers routed,
    r = 0.2) on an 8-layer, 512-wide Llama with Llama-3's MLP ratio (3.5); frame features are pre-computed, as in
    the original training."""
    return tiny_config(num_hidden_layers=8, hidden_size=512, intermediate_size=1792, vocab_size=1024, **overrides)


def full_size_config(**overrides) -> VideoLLMMoDConfig:
    """The released layout: Llama-3-8B-Instruct + SigLIP-L/16-384, 10 tokens per frame, placeholder 128256."""
    text_config = {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
        "bos_token_id": 128000,
        "eos_token_id": 128009,
    }
    kwargs = {"video_token_id": 128256, "frame_token_interval_id": 11, "stream_response_token_id": 933, **overrides}
    # The config's default vision tower is already SigLIP-L/16-384.
    return VideoLLMMoDConfig(text_config=text_config, **kwargs)


def from_text_model(text_model: str, vision_config: dict | None = None, **overrides):
    """A VideoLLM-MoD whose language part is a stock checkpoint of a supported family (Llama, Mistral, Qwen2 /
    Qwen2.5, Qwen3; a folder or a Hub id, safetensors only), loaded under the family's own weight names; the vision
    tower, connector and routers are new (to be trained, or the tower loaded from SigLIP).

        model, info = from_text_model("Qwen/Qwen2.5-0.5B-Instruct", frame_token_interval_id=..., stream_response_token_id=...)

    The placeholder defaults to the first id past the vocabulary (`video_token_id = vocab_size`), as the converted
    Llama-3 model's; embeddings stay tied if the text model ties them. Returns the model and its loading info
    (`missing_keys`: only `model.vision_tower.*`, `model.connector.*`, `*.router.*`; `unexpected_keys`: none).
    """
    from transformers import AutoConfig

    from modeling_videollm_mod import VideoLLMMoDForCausalLM

    text = AutoConfig.from_pretrained(text_model)
    config = VideoLLMMoDConfig(
        text_config=text.to_dict(),
        vision_config=vision_config,
        **{"video_token_id": text.vocab_size, "tie_word_embeddings": bool(text.tie_word_embeddings), **overrides},
    )
    return VideoLLMMoDForCausalLM.from_pretrained(
        text_model, config=config, use_safetensors=True, output_loading_info=True
    )
