"""Model cards: the `model_card.md` template (the repository's top-level file, installed next to this module) rendered
with `huggingface_hub.ModelCard`, and its metadata taken from the model's own provenance: what it was converted or
fine-tuned from, that source's licence, and its data. Local paths are never published, only Hub repo ids."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..loading import looks_like_repo_id

TEMPLATE = Path(__file__).with_name("model_card.md")

TAGS = ["videollm-mod", "video-llm", "streaming", "mixture-of-depths", "siglip", "custom_code"]
# The streaming metrics of VideoLLM-online / VideoLLM-MoD.
METRICS = ["perplexity", "accuracy"]
FAMILY_NAMES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}  # by text model_type
PIPELINE_TAG = "video-text-to-text"  # the model loads with AutoModelForImageTextToText, as transformers' video LLMs


def published_name(name_or_path: str) -> str:
    """A source as it may appear in a published card or report: a Hub repo id as it is, a local folder by its last
    component only (never the machine's path)."""
    if looks_like_repo_id(name_or_path):
        return name_or_path
    return f"local folder '{Path(name_or_path).name}'"


def folder_card_data(folder: str | Path) -> ModelCardData | None:
    """The metadata of the card (`README.md`) in a local model folder, if it has one."""
    readme = Path(folder) / "README.md"
    return ModelCard.load(readme).data if readme.is_file() else None


def base_card_data(**kwargs) -> ModelCardData:
    """The metadata every VideoLLM-MoD card has, with `kwargs` (provenance fields) added or replacing it."""
    fields = {"language": "en", "library_name": "transformers", "pipeline_tag": PIPELINE_TAG, "tags": list(TAGS)}
    return ModelCardData(**{**fields, "metrics": METRICS, **kwargs})


def converted_card_data(sources: dict[str, str], base_card=None, adapter_card=None, mod: bool = False):
    """A converted VideoLLM-online checkpoint: its base models are the language model and the adapter (where they are
    Hub repos), its licence the language model's (the weights are merged), its data the adapter's."""
    base_model = [sources[name] for name in ("base", "adapter") if looks_like_repo_id(sources[name])]
    return base_card_data(
        license=getattr(base_card, "license", None),
        base_model=base_model or None,
        datasets=getattr(adapter_card, "datasets", None),
        tags=TAGS + ([] if mod else ["dense"]),
    )


def fine_tuned_card_data(parent: str, parent_card, dataset: str):
    """A model fine-tuned with `videollm-mod train` from `parent` on `dataset`: the parent's licence; its base model is
    the parent when that is a Hub repo (else the parent's own base models); its data the dataset when that is a
    Hub repo."""
    base_model = [parent] if looks_like_repo_id(parent) else getattr(parent_card, "base_model", None)
    return base_card_data(
        license=getattr(parent_card, "license", None),
        base_model=base_model,
        datasets=[dataset] if looks_like_repo_id(dataset) else None,
        training_data=f"Fine-tuned with `videollm-mod train` from {published_name(parent)} on the prepared dataset "
        f"{published_name(dataset)}.",
    )


def install_line() -> str:
    """`pip install ...` of what the code next to the weights needs: this package's own core requirements."""
    try:
        requirements = [r for r in metadata.requires("videollm-mod") or [] if "extra ==" not in r]
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        requirements = ["transformers", "torch", "av", "pillow"]
    return "pip install " + " ".join(f"'{r.split(';')[0].strip()}'" for r in requirements)


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
        "language_model": f"{FAMILY_NAMES.get(text.model_type, text.model_type)}, {text.num_hidden_layers} layers, hidden size {text.hidden_size}, "
        f"vocabulary {text.vocab_size}",
        "vision_model": f"SigLIP, {vision.image_size} px, patch {vision.patch_size}, hidden size {vision.hidden_size}",
        "max_positions": text.max_position_embeddings,
    }


def render_model_card(card_data: ModelCardData, model_id: str, config=None, **kwargs) -> ModelCard:
    """`model_card.md` rendered with `card_data` as its YAML header; `kwargs` fill the template's other variables
    (`source`: a conversion report)."""
    if not TEMPLATE.is_file():
        raise FileNotFoundError(f"the model card template {TEMPLATE} is missing from this installation")
    values = {
        **(template_kwargs(config) if config is not None else {}),
        "install": install_line(),
        "training_data": getattr(card_data, "training_data", None),
        **kwargs,
    }
    return ModelCard.from_template(card_data, template_path=str(TEMPLATE), model_id=model_id, **values)
