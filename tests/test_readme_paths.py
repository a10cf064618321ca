"""Every file the README names, and every folder it names in the repository's own folders, is in the repository, or
the README says it is outside it."""

import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
TOP = {path.name for path in REPOSITORY.iterdir()}


def named_paths(text: str) -> list[tuple[str, str]]:
    """`(path, its line)` of each file (`x/y.ext`) or folder of the repository (`recipes/...`) the README names in
    backticks, code blocks and link targets. Left out: URLs, absolute paths (devices), shell variables and `runs/`,
    which the README's commands create."""
    found, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        tokens = (
            re.findall(r"`([^`]+)`", line) + re.findall(r"\]\(([^)\s]+)\)", line) + (line.split() if in_code else [])
        )
        for word in (word.strip("\"'(),;:") for token in tokens for word in token.split()):
            if "/" not in word or "://" in word or word.startswith(("/", "$", "runs/", "-")):
                continue
            if re.search(r"\.[A-Za-z]{1,5}$", word.rsplit("/", 1)[-1]) or word.split("/")[0] in TOP | {"..", "."}:
                found.append((word, line))
    return found


def in_repository(path: str) -> bool:
    """At the repository's top, or under one of its folders (the layout table names a file beside its folder)."""
    candidates = [REPOSITORY / path, *REPOSITORY.glob(f"*/{path.rstrip('/')}")]
    return any(c.exists() and c.resolve().is_relative_to(REPOSITORY) for c in candidates)


def test_the_readme_names_no_path_a_clone_lacks_without_saying_so():
    paths = named_paths((REPOSITORY / "README.md").read_text())
    assert {"recipes/configs/tiny_full.yaml", "docs/web_demo.png"} <= set(dict(paths))  # it finds what it should
    missing = [path for path, line in paths if not in_repository(path) and "outside this repository" not in line]
    assert missing == []


def test_every_module_the_docs_run_with_python_m_is_installed():
    """`python -m X` and `accelerate launch ... -m X` in the READMEs name modules that exist (the tooling installs as
    `videollm_mod.*`: `-m recipes.sft` failed from a clone)."""
    import importlib.util

    docs = [REPOSITORY / "README.md", *REPOSITORY.glob("*/README.md")]
    modules = {name for doc in docs for name in re.findall(r"(?<!\S)-m ([A-Za-z_][\w.]*)", doc.read_text())}
    modules -= {"slow", "not"}  # pytest's -m marker expressions
    assert {"videollm_mod.recipes.sft", "videollm_mod.recipes.distributed_check", "pytest"} <= modules
    assert sorted(name for name in modules if importlib.util.find_spec(name) is None) == []
