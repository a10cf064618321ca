"""Model cards: the top-level `model_card.md` template rendered with `huggingface_hub.ModelCard` and its metadata."""

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

# The template lives at the repository root (next to pyproject.toml), one level above this package.
TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"

TAGS = ["videollm-mod", "video-llm", "streaming", "mixture-of-depths", "llama-3", "siglip", "custom_code"]
ORIGINAL = {
    "adapter": "chenjoya/videollm-online-8b-v1plus",
    "base_model": "meta-llama/Meta-Llama-3-8B-Instruct",
    "vision_model": "google/siglip-large-patch16-384",
    "datasets": ["chenjoya/videollm-online-chat-ego4d-134k"],
}
# The streaming metrics of VideoLLM-online / VideoLLM-MoD (Hub metric ids where one exists).
METRICS = ["perplexity", "accuracy", "lm_ppl", "time_diff", "fluency", "lm_correctness"]


def converted_card_data(config, license: str = "llama3", base_model: str | list[str] | None = None) -> ModelCardData:
    """Metadata of a checkpoint converted from VideoLLM-online-8B-v1+ (Llama-3 license: the weights are merged)."""
    return ModelCardData(
        license=license,
        language="en",
        library_name="transformers",
        pipeline_tag="video-text-to-text",
        base_model=base_model or [ORIGINAL["base_model"], ORIGINAL["adapter"]],
        tags=TAGS + (["dense"] if not config.mod_layers else []),
        datasets=ORIGINAL["datasets"],
        metrics=METRICS,
    )


def template_kwargs(config) -> dict:
    """The template's variables that the config answers."""
    hp, wp = config.frame_token_pooled
    if config.mod_layers:
        mod = (
            f"layers {', '.join(map(str, config.mod_layers))} process the top {config.mod_keep_per_frame} of "
            f"{config.frame_num_tokens} vision tokens of each frame (keep ratio {config.mod_keep_ratio}, "
            f"{config.mod_selection} selection); the other layers are dense."
        )
    else:
        mod = "dense: every decoder layer processes every vision token (the VideoLLM-online model)."
    text, vision = config.text_config, config.vision_config
    return {
        "frame_num_tokens": config.frame_num_tokens,
        "frame_token_pooled": f"{hp}x{wp}",
        "mod_summary": mod,
        "language_model": f"Llama, {text.num_hidden_layers} layers, hidden size {text.hidden_size}, "
        f"vocabulary {text.vocab_size}",
        "vision_model": f"SigLIP, {vision.image_size} px, patch {vision.patch_size}, hidden size {vision.hidden_size}",
    }


def render_model_card(card_data: ModelCardData, model_id: str, config=None, **kwargs) -> ModelCard:
    """`model_card.md` rendered with `card_data` as its YAML header; `kwargs` fill the template's other variables."""
    if not TEMPLATE.is_file():
        raise FileNotFoundError(f"the model card template {TEMPLATE} is missing (it ships with the repository)")
    values = {**(template_kwargs(config) if config is not None else {}), **kwargs}
    return ModelCard.from_template(card_data, template_path=str(TEMPLATE), model_id=model_id, **values)
