"""Tooling of VideoLLM-MoD: the `videollm-mod` command, the shipped demo model, the data scripts
(`videollm_mod.data_scripts`), the training recipes (`videollm_mod.recipes`) and checkpoint conversion and releases
(`videollm_mod.conversion`).

The model itself, the code that travels with the weights, is the package `modeling_videollm_mod`; the tooling
imports it, never the other way round.
"""

from __future__ import annotations

from pathlib import Path

# The demo model that ships with the package: weights, config, tokenizer and processor files (data only; its code is
# this installation's `modeling_videollm_mod`, written next to the weights when the model is saved or released).
DEMO_MODEL = Path(__file__).parent / "demo"


def demo_path(cache_dir: str | Path | None = None) -> Path:
    """A folder from which the shipped demo model loads in any process, as a Hub release does::

        AutoModelForCausalLM.from_pretrained(videollm_mod.demo_path(), trust_remote_code=True)

    The demo in the package (`DEMO_MODEL`) is data only, and its config's `auto_map` names code files it does not
    hold; this folder holds its files plus this installation's remote code, written as `videollm-mod release` writes
    it. It is made once per version of the demo and of the code (the folder's name carries a hash of their bytes),
    under `cache_dir` (default: `$HF_HOME/videollm_mod`), and reused.
    """
    import hashlib
    import shutil

    from .conversion.checkpoint_io import copy_remote_code, remote_code_files
    from .files import atomic_output_folder

    if cache_dir is None:
        from huggingface_hub.constants import HF_HOME

        cache_dir = Path(HF_HOME) / "videollm_mod"
    data = sorted(path for path in DEMO_MODEL.iterdir() if path.is_file())
    digest = hashlib.sha256()
    for file in [*data, *remote_code_files()]:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    folder = Path(cache_dir).expanduser() / f"demo-{digest.hexdigest()[:16]}"
    if folder.is_dir():
        return folder
    try:
        with atomic_output_folder(folder) as tmp:
            for file in data:
                shutil.copy(file, tmp / file.name)
            copy_remote_code(tmp)
    except OSError:  # another process wrote the same folder first
        if not folder.is_dir():
            raise
    return folder
