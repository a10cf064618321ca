"""Finding and loading a model for the commands: a local folder, a Hub repo id, or (by default) the shipped demo.

The one loading policy of every command, the web demo and the recipes:

- a checkpoint of this package's `model_type` loads with the installed classes; none of the code shipped beside its
  weights runs (a note says so when that code differs from the installed one);
- a checkpoint of another `model_type` that needs its own code (`auto_map`) is refused before any of it is imported,
  unless the user consents with `--trust-remote-code`, which runs it as transformers would;
- weights load from safetensors only; pickled weights (`pytorch_model.bin`), which can run code when unpickled, need
  `--allow-pickle`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from . import DEMO_MODEL
from .errors import UserError
from .remote_code import remote_constant

# `model_type` of this package's checkpoints, which the installed classes serve.
MODEL_TYPE = remote_constant("configuration_videollm_mod", "MODEL_TYPE")
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TRUST_HELP = "run the Python code a model folder or Hub repo ships for its own model_type (only for authors you trust)"
PICKLE_HELP = "load pickled weights (pytorch_model.bin) when a model has no safetensors (only from sources you trust)"


def add_model_arguments(parser: argparse.ArgumentParser, **model_kwargs) -> None:
    """`--model` (with `model_kwargs` for `add_argument`) and the two consents every command that loads one takes."""
    model_kwargs.setdefault("default", None)
    model_kwargs.setdefault("help", f"model folder or Hub repo (default: the demo, {DEMO_MODEL})")
    parser.add_argument("--model", **model_kwargs)
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    parser.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)


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


@dataclass(frozen=True)
class CheckedModel:
    """A model that the policy lets load: where it is, its `model_type`, and how to load it."""

    path: str  # folder or Hub repo id
    model_type: str | None
    use_safetensors: bool | None  # True: safetensors only; None: safetensors, else pickles (the user allowed them)
    remote_code: bool  # runs its own code (the user consented)

    @property
    def ours(self) -> bool:
        return self.model_type == MODEL_TYPE


def read_config(path: str, revision: str | None = None) -> dict:
    """The `config.json` of a folder or Hub repo as a dict: parsed as JSON, nothing of the model imported."""
    if Path(path).is_dir():
        file = Path(path) / "config.json"
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{file}: not a readable JSON config ({error})") from None
    from huggingface_hub import hf_hub_download

    with open(hf_hub_download(path, "config.json", revision=revision)) as file:
        return json.load(file)


def check_pickles(name: str, path: str, allow_pickle: bool) -> None:
    """Refuse a folder whose only weights are pickles, unless `allow_pickle`. (For a Hub repo, transformers'
    `use_safetensors=True` refuses them, see `load_model_and_processor`.)"""
    folder = Path(path)
    if allow_pickle or not folder.is_dir() or any((folder / file).is_file() for file in SAFETENSORS):
        return
    pickles = sorted(file for file in PICKLES if (folder / file).is_file())
    if pickles:
        raise UserError(f"{name}: {refuse_pickles(pickles[0])}")


def refuse_pickles(file: str) -> str:
    return (
        f"only pickled weights ({file}), which can run code when loaded: convert them once where you trust them "
        "(from_pretrained(..., use_safetensors=False).save_pretrained(FOLDER) writes model.safetensors) or pass "
        "--allow-pickle"
    )


def check_model(
    name_or_path: str | None, trust_remote_code: bool = False, allow_pickle: bool = False, revision: str | None = None
) -> CheckedModel:
    """What the policy says about a model, decided from its `config.json` and file names alone: a `UserError` (one
    line) for a model that would run its own code without `trust_remote_code`, that is no VideoLLM-MoD checkpoint,
    or whose weights are only pickles without `allow_pickle`."""
    path = resolve_model(name_or_path)
    name = name_or_path or path
    config = read_config(path, revision)
    model_type = config.get("model_type")
    if model_type != MODEL_TYPE:
        if "AutoModelForCausalLM" not in config.get("auto_map", {}):
            raise UserError(f"{name}: model_type {model_type!r} is not a VideoLLM-MoD checkpoint ({MODEL_TYPE!r})")
        if not trust_remote_code:
            raise UserError(
                f"{name}: model_type {model_type!r} is not this package's ({MODEL_TYPE!r}) and loading it runs the "
                "Python code it ships: pass --trust-remote-code if you trust its author"
            )
    check_pickles(name, path, allow_pickle)
    return CheckedModel(path, model_type, None if allow_pickle else True, remote_code=model_type != MODEL_TYPE)


def shipped_code_differences(path: str, revision: str | None = None) -> list[str]:
    """The names of the remote-code files a checkpoint ships that differ from this installation's (files it does not
    ship, or that cannot be had offline, are not compared). Reading them runs nothing."""
    from transformers.utils import cached_file

    from .conversion.checkpoint_io import remote_code_files

    differing = []
    for installed in remote_code_files():
        shipped = cached_file(
            path,
            installed.name,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if shipped is not None and Path(shipped).read_bytes() != installed.read_bytes():
            differing.append(installed.name)
    return differing


def load_model_and_processor(
    name_or_path: str | None,
    device: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    **kwargs,
):
    """`(model, processor)` under the loading policy (see the module), the model in eval mode on `device` (default:
    cuda if available). `kwargs` go to `from_pretrained` (`dtype`, default "auto"; `revision`; `device_map`, which
    then places the model instead of `device`, ...)."""
    checked = check_model(name_or_path, trust_remote_code, allow_pickle, kwargs.get("revision"))
    import torch
    from transformers.utils import logging as transformers_logging

    kwargs.setdefault("dtype", "auto")
    bar = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # "Loading weights" would print above every command's own output
    try:
        if checked.ours:
            from modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDProcessor

            model = VideoLLMMoDForCausalLM.from_pretrained(
                checked.path, use_safetensors=checked.use_safetensors, **kwargs
            )
            processor = VideoLLMMoDProcessor.from_pretrained(checked.path, revision=kwargs.get("revision"))
            differing = shipped_code_differences(checked.path, kwargs.get("revision"))
            if differing:
                print(
                    f"note: {name_or_path}: its own code ({', '.join(differing)}) differs from this installation's; "
                    "the installed code runs",
                    file=sys.stderr,
                )
        else:
            from transformers import AutoModelForCausalLM, AutoProcessor

            model = AutoModelForCausalLM.from_pretrained(
                checked.path, trust_remote_code=True, use_safetensors=checked.use_safetensors, **kwargs
            )
            processor = AutoProcessor.from_pretrained(checked.path, trust_remote_code=True)
    except OSError as error:
        if checked.use_safetensors and "safetensors" in str(error):  # a Hub repo with only pickles
            raise UserError(f"{name_or_path}: {refuse_pickles('pytorch_model.bin')}") from None
        raise
    finally:
        if bar:
            transformers_logging.enable_progress_bar()
    if "device_map" in kwargs:  # placed by accelerate as it loaded
        return model.eval(), processor
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), processor
