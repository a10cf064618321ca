"""`videollm-mod` console command: one sub-command per tool, each a module with a `main(argv)` imported lazily.

videollm-mod narrate VIDEO [--model PATH_OR_REPO] ...     stream a video and print what the model says
videollm-mod evaluate ...                                 streaming metrics (LM-PPL, TimeDiff, Fluency, ...)
videollm-mod train CONFIG.yaml ...                        TRL SFT recipe
videollm-mod convert ...                                  VideoLLM-online checkpoint -> this format
videollm-mod release ...                                  assemble a release folder and push it to the Hub
videollm-mod data NAME ...                                data scripts (synthetic, prepare_coin, ...)
"""

import importlib
import sys

COMMANDS = {
    "narrate": ("modeling_videollm_mod.narrate", "stream a video and print timestamped narration and replies"),
    "evaluate": ("recipes.evaluate", "streaming metrics of a model on a prepared dataset"),
    "train": ("recipes.sft", "fine-tune with the TRL SFT recipe"),
    "convert": ("conversion.convert_videollm_online", "convert a VideoLLM-online checkpoint"),
    "release": ("conversion.release", "assemble a release folder and push it to the Hub"),
    "data": ("data_scripts", "data scripts: videollm-mod data NAME --help"),
}


def usage() -> str:
    lines = ["usage: videollm-mod COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"videollm-mod: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    if name == "data":
        if not rest or rest[0].startswith("-"):
            print("usage: videollm-mod data NAME [ARGS]  (NAME: a module of data_scripts, e.g. synthetic)")
            return 0 if rest else 2
        module_name, rest = f"data_scripts.{rest[0]}", rest[1:]
    return importlib.import_module(module_name).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
