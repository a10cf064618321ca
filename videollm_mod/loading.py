"""Finding and loading a model for the commands: a local folder, a Hub repo id, or (by default) the shipped demo."""

from __future__ import annotations

from pathlib import Path

from . import DEMO_MODEL
from .errors import UserError


def looks_like_repo_id(name: str) -> bool:
    """Whether `name` can only mean a Hub repo id: `owner/name`, where no local folder `owner` exists (so that
    `runs/mymodel`, with `runs/` present, is a missing local folder and not a Hub lookup)."""
    parts = name.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not name.startswith((".", "~"))
        and not Path(parts[0]).exists()
        and not Path(name).exists()
    )


def resolve_model(name_or_path: str | None) -> str:
    """The folder or Hub repo id to load; `None` is the shipped demo model.

    A name that is an existing folder must hold a `config.json`. Any other name is a Hub repo id only if it has the
    form `owner/name` and `owner` is not a local folder: `runs/mymodel` with an existing `runs/` is a missing folder,
    reported as such instead of as a Hub error.
    """
    if name_or_path is None:
        return str(DEMO_MODEL)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{name_or_path}: no config.json in this folder (not a saved model)")
        return str(path)
    if path.exists():
        raise UserError(f"{name_or_path}: a file, not a model folder")
    if not looks_like_repo_id(name_or_path):
        raise UserError(f"{name_or_path}: no such model folder")
    return name_or_path


def load_model_and_processor(name_or_path: str | None, device: str | None = None, **kwargs):
    """`(model, processor)` with the Auto classes and `trust_remote_code=True` (a Hub repo's code, or this
    installation's for folders it registered), the model in eval mode on `device` (default: cuda if available)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    import modeling_videollm_mod  # noqa: F401  registers the classes: folders saved without code (the demo) load

    path = resolve_model(name_or_path)
    kwargs.setdefault("dtype", "auto")
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, **kwargs)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), processor
