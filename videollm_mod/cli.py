"""`videollm-mod`: one command, one sub-command per tool (each a module with `main(argv) -> int`, imported lazily).

    videollm-mod narrate VIDEO [--model PATH_OR_REPO] ...   stream a video and print what the model says
    videollm-mod demo [--model PATH_OR_REPO] [--port N]      a web app that narrates a video live (Gradio)
    videollm-mod evaluate --dataset DIR ...                  streaming metrics of a model on a prepared dataset
    videollm-mod train --config CONFIG.yaml ...              fine-tune with the TRL SFT recipe
    videollm-mod warmup --data FRAMES --output_dir DIR ...   pretrain a small SigLIP on (frame, caption) pairs
    videollm-mod convert ...                                 VideoLLM-online checkpoint -> this format
    videollm-mod release MODEL_FOLDER ...                    assemble a release folder and push it to the Hub
    videollm-mod data NAME ...                               data scripts (synthetic, prepare_coin, ...)

Exit status: 0 on success, 1 when the input is at fault (reported as one line naming the file, record, field or
argument; `--debug` shows the traceback), 2 for a usage error, 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DISTRIBUTION = "videollm-mod"
# name: (module, what it does, the extra of pyproject.toml it needs beyond the core install); a data script's extra is
# in `data_scripts.SCRIPTS`. Optional parts say what they need where they are used (--plot: plot; demo: demo).
COMMANDS = {
    "narrate": ("videollm_mod.narrate", "stream a video and print timestamped narration and replies", None),
    "demo": ("videollm_mod.web_demo", "a web app that narrates a video live, in the browser (Gradio)", None),
    "evaluate": ("videollm_mod.recipes.evaluate", "streaming metrics of a model on a prepared dataset", "data"),
    "train": ("videollm_mod.recipes.sft", "fine-tune with the TRL SFT recipe (--config CONFIG.yaml)", "train"),
    "warmup": ("videollm_mod.recipes.vision_warmup", "pretrain a small SigLIP on (frame, caption) pairs", "train"),
    "convert": ("videollm_mod.conversion.convert_videollm_online", "convert a VideoLLM-online checkpoint", "convert"),
    "release": ("videollm_mod.conversion.release", "assemble a release folder and push it to the Hub", None),
    "data": ("videollm_mod.data_scripts", "data scripts: videollm-mod data NAME --help", None),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """What counts as the user's input being at fault: reported in one line, not as a crash."""
    from .errors import UserError

    errors = (UserError, ValueError, OSError)
    model_package = sys.modules.get("modeling_videollm_mod")  # raised only once imported: not imported for it
    return errors if model_package is None else (*errors, model_package.StreamContextLimitError)


def missing_requirements(extra: str) -> list[str]:
    """The distributions that the `extra` of this package requires and that are not installed, from the package's
    metadata (nothing is missing where it has none: run from a clone that was not installed)."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    try:
        requirements = [Requirement(text) for text in requires(DISTRIBUTION) or []]
    except PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
            try:
                version(requirement.name)
            except PackageNotFoundError:
                missing.append(requirement.name)
    return missing


def usage() -> str:
    lines = ["usage: videollm-mod [--debug] COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text, _) in COMMANDS.items()]
    lines += ["", "--debug: show the traceback of an error instead of one line"]
    return "\n".join(lines)


def data_usage() -> str:
    from .data_scripts import SCRIPTS

    lines = ["usage: videollm-mod data NAME [ARGS]   (videollm-mod data NAME --help for its options)", "", "scripts:"]
    for name in SCRIPTS:
        # The first line of its docstring, read without importing it (some import torch: seconds).
        source = Path(importlib.util.find_spec(f"videollm_mod.data_scripts.{name}").origin).read_text()
        doc = ast.get_docstring(ast.parse(source)) or ""
        lines.append(f"  {name:<32} {doc.splitlines()[0] if doc else ''}")
    return "\n".join(lines)


def run(prog: str, main: Callable[[list[str]], int], argv: Sequence[str]) -> int:
    """Run a tool's `main(argv)` as a command (`python -m` runs its module this way too): its exit status; user errors
    as one line on stderr, or with their traceback after `--debug`."""
    debug = "--debug" in argv
    # Warnings and errors only: at INFO every library's chatter would show (matplotlib's font search, ...).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(main([a for a in argv if a != "--debug"]) or 0)
    except SystemExit as exit_:  # argparse: --help (0) and usage errors (2, the message already printed)
        if isinstance(exit_.code, str):
            print(f"{prog}: {exit_.code}", file=sys.stderr)
            return 1
        return exit_.code or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except user_errors() as error:
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{prog}: {message}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = ["--debug"] if "--debug" in argv else []
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"videollm-mod: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, extra = COMMANDS[name]
    prog = f"videollm-mod {name}"
    if name == "data":
        from .data_scripts import SCRIPTS

        if not rest or rest[0] in ("-h", "--help"):
            print(data_usage(), file=sys.stdout if rest else sys.stderr)
            return 0 if rest else 2
        if rest[0] not in SCRIPTS:
            print(f"videollm-mod data: unknown script {rest[0]!r}\n\n{data_usage()}", file=sys.stderr)
            return 2
        extra = SCRIPTS[rest[0]]
        module_name, prog, rest = f"videollm_mod.data_scripts.{rest[0]}", f"videollm-mod data {rest[0]}", rest[1:]
    missing = missing_requirements(extra) if extra else []
    if missing:
        print(
            f'{prog}: needs {", ".join(missing)} (not installed): pip install "{DISTRIBUTION}[{extra}]"',
            file=sys.stderr,
        )
        return 1
    return run(prog, importlib.import_module(module_name).main, rest + debug)


if __name__ == "__main__":
    sys.exit(main())
