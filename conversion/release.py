"""Assemble a release folder from a model folder, check that it reloads in a fresh process, and push it to the Hub.

    videollm-mod release MODEL_FOLDER --repo-id org/videollm-online-8b-v1plus-hf [--output DIR] [--no-push]
        [--private] [--license llama3] [--base-model ID ...] [--dataset ID ...] [--metric NAME ...] [--tag TAG ...]

The release folder holds the weights (safetensors and their index), `config.json`, `generation_config.json`, the
processor files, the remote code of the installed package (what `save_pretrained` copies) and `README.md`: the
`model_card.md` template rendered with `ModelCardData` metadata (license, base_model, pipeline_tag, tags, datasets,
metrics) from the model's own provenance, the card in the model folder (written by `convert`, by `train` and with the
demo model), overridden by the options; a folder without a card needs at least `--license`. Nothing else (optimizer
states, pickles, logs) is copied; files are world-readable. Before pushing, a fresh Python process in which the package cannot be imported loads the folder with
`trust_remote_code=True` (offline, empty `HF_HOME`), with no missing or unexpected weights, and runs one streaming
forward; if that fails, nothing is pushed. The push is one `HfApi.upload_folder` commit.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import UserError
from ..files import atomic_output_folder
from .checkpoint_io import SAFETENSORS_INDEX, copy_remote_code

# Files of a model folder that belong in a release, besides the weights and the remote code.
RELEASE_FILES = [
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "conversion_report.json",
]
REQUIRED_CARD_FIELDS = ["license", "pipeline_tag", "tags"]


class ReleaseError(UserError):
    """A release that must not be pushed; the message says which file or check failed."""


# Runs in a fresh interpreter: the package is made unimportable, so only the code inside the folder can serve.
RELOAD_CHECK = """
import json, os, sys
sys.modules["modeling_videollm_mod"] = None
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

folder = sys.argv[1]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model, info = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
problems = {k: sorted(v) for k, v in info.items() if v and k != "error_msgs"}
if problems:
    raise SystemExit(f"weights do not match the model: {problems}")
if not type(model).__module__.startswith("transformers_modules."):
    raise SystemExit(f"loaded {type(model).__module__}, not the folder's remote code")
if config.model_type != "videollm_mod":
    raise SystemExit(f"model_type is {config.model_type!r}")
processor = None
if os.path.exists(os.path.join(folder, "processor_config.json")):
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    processor.check_model_config(model.config)
# One frame of zero features after a few text tokens: the streaming path, with its decision distribution.
text = config.text_config
ids = [text.bos_token_id or 0] + [config.video_token_id] * config.frame_num_tokens
features = torch.zeros(1, config.frame_num_tokens, config.vision_config.hidden_size, dtype=model.dtype)
with torch.no_grad():
    logits = model.eval()(input_ids=torch.tensor([ids]), frame_features=features).logits
if logits.shape != (1, len(ids), text.vocab_size) or not torch.isfinite(logits.float()).all():
    raise SystemExit(f"bad logits: shape {tuple(logits.shape)}, finite {bool(torch.isfinite(logits.float()).all())}")
print(json.dumps({"class": type(model).__name__, "processor": type(processor).__name__ if processor else None}))
"""


def weight_files(folder: Path) -> list[str]:
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ReleaseError(f"{index} lists shards that are missing: {missing}")
        return [SAFETENSORS_INDEX, *shards]
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    pickles = sorted(p.name for p in folder.glob("*.bin"))
    raise ReleaseError(
        f"no safetensors weights in {folder}" + (f" (pickles {pickles} are not released)" if pickles else "")
    )


def release_card_data(model_folder: Path, overrides: dict):
    """The folder's card metadata (its provenance; a bare card without one), with `overrides` applied; every field
    of `REQUIRED_CARD_FIELDS` must end up set."""
    from .model_card import base_card_data, folder_card_data

    data = folder_card_data(model_folder) or base_card_data()
    for name, value in overrides.items():
        if value:
            setattr(data, name, value)
    missing = [name for name in REQUIRED_CARD_FIELDS if not getattr(data, name, None)]
    if missing:
        raise ReleaseError(
            f"{model_folder}: the model card lacks {missing} (no README.md card says it): pass them as options, "
            f"e.g. --license apache-2.0"
        )
    return data


def assemble_release(
    model_folder: str | Path, output: str | Path, repo_id: str, card_overrides: dict | None = None, overwrite=False
) -> list[str]:
    """Write the release folder `output` (atomically); returns its file names, sorted."""
    from modeling_videollm_mod import VideoLLMMoDConfig

    from ..loading import MODEL_TYPE, read_config
    from .model_card import render_model_card

    model_folder, output = Path(model_folder), Path(output)
    if not model_folder.is_dir():
        raise ReleaseError(f"{model_folder}: no such model folder")
    if not (model_folder / "config.json").is_file():
        raise ReleaseError(f"{model_folder}: no config.json in this folder (not a saved model)")
    # read as JSON, not through AutoConfig: a folder of another model_type is refused before any of its code runs
    model_type = read_config(str(model_folder)).get("model_type")
    if model_type != MODEL_TYPE:
        raise ReleaseError(
            f"{model_folder}: model_type {model_type!r} is not a VideoLLM-MoD checkpoint ({MODEL_TYPE!r}), the only kind "
            "this command releases"
        )
    config = VideoLLMMoDConfig.from_pretrained(model_folder)
    card_data = release_card_data(model_folder, card_overrides or {})
    report_file = model_folder / "conversion_report.json"
    source = json.loads(report_file.read_text()) if report_file.is_file() else None
    with atomic_output_folder(output, overwrite=overwrite) as tmp:
        for name in weight_files(model_folder) + [f for f in RELEASE_FILES if (model_folder / f).is_file()]:
            shutil.copy(model_folder / name, tmp / name)
        copy_remote_code(tmp)  # the installed package's code, as save_pretrained would copy it
        render_model_card(card_data, model_id=repo_id, config=config, source=source).save(tmp / "README.md")
    return sorted(p.name for p in output.iterdir())


def verify_release(folder: str | Path, timeout: float = 1800) -> dict:
    """Load `folder` in a fresh process (package unimportable, offline, empty HF_HOME) with trust_remote_code and run
    one forward; raise a `ReleaseError` with the process's last lines if anything fails."""
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="videollm-mod-release-check-") as home:
        env = {**os.environ, "HF_HOME": home, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
        result = subprocess.run(
            [sys.executable, "-c", RELOAD_CHECK, str(folder)],
            env=env,
            cwd=home,  # not the repository: nothing importable from the working directory
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ReleaseError(f"{folder} does not reload with trust_remote_code in a fresh process:\n{tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def push_release(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload VideoLLM-MoD release",
    revision: str | None = None,
    create_pr: bool = False,
):
    """Create the repo if needed and upload the folder in one commit; returns the `CommitInfo`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
    )


def release(
    model_folder: str | Path,
    repo_id: str,
    output: str | Path | None = None,
    push: bool = True,
    card_overrides: dict | None = None,
    overwrite: bool = False,
    **push_kwargs,
) -> Path:
    """Assemble, verify in a fresh process, then push (when `push`). Returns the release folder."""
    output = Path(output) if output else Path(model_folder).parent / f"{Path(model_folder).name}-release"
    assemble_release(model_folder, output, repo_id, card_overrides, overwrite=overwrite)
    verify_release(output)
    if push:
        push_release(output, repo_id, **push_kwargs)
    return output


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="videollm-mod release", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_folder", help="a converted or trained model folder")
    parser.add_argument("--repo-id", required=True, help="Hub repo id, e.g. org/videollm-mod-8b")
    parser.add_argument("--output", help="release folder (default: MODEL_FOLDER-release)")
    parser.add_argument("--no-push", action="store_true", help="assemble and verify only")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing release folder")
    parser.add_argument("--private", action="store_true", default=None)
    parser.add_argument("--token", help="Hub token (default: the logged-in one)")
    parser.add_argument(
        "--commit-message", default="Upload VideoLLM-MoD release", help="of the Hub commit (default: %(default)s)"
    )
    parser.add_argument("--revision")
    parser.add_argument("--create-pr", action="store_true")
    parser.add_argument("--license")
    parser.add_argument("--base-model", nargs="+")
    parser.add_argument("--pipeline-tag")
    parser.add_argument("--tag", nargs="+", dest="tags")
    parser.add_argument("--dataset", nargs="+", dest="datasets")
    parser.add_argument("--metric", nargs="+", dest="metrics")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {
        "license": args.license,
        "base_model": args.base_model,
        "pipeline_tag": args.pipeline_tag,
        "tags": args.tags,
        "datasets": args.datasets,
        "metrics": args.metrics,
    }
    output = release(
        args.model_folder,
        args.repo_id,
        output=args.output,
        push=not args.no_push,
        card_overrides=overrides,
        overwrite=args.overwrite,
        private=args.private,
        token=args.token,
        commit_message=args.commit_message,
        revision=args.revision,
        create_pr=args.create_pr,
    )
    print(f"release folder {output}" + ("" if args.no_push else f" pushed to {args.repo_id}"))
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod release", main, sys.argv[1:]))
