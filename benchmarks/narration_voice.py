"""In which voice a model narrates a video it is given with no instruction, as `videollm-mod narrate` and the README's
example run one: the narration streams' ("C sees a red triangle appear.") or the live chats' ("A red triangle
appears."). A model trained on both can mix them up when nothing tells it which stream it is in.

    python benchmarks/narration_voice.py --model videollm_mod/demo runs/demo-g6   # ~30 s a model on one core

Clips: `counterfactuals.random_events` of seeds 4240 to 4259, 12 s each (the seeds around the README example test's
4242), rendered at the world's 48 px; replies by `counterfactuals.replies` (no query, the default threshold).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

from videollm_mod.data_scripts.prepare_ego4d_narration import clean_narration
from videollm_mod.loading import load_model_and_processor
from videollm_mod.recipes import counterfactuals as cf


def narration_voice(model, processor, clips: list[tuple[str, list]]) -> dict:
    """Replies over `clips` (`(path, events)`), and how many open as the clip's own narrations do ("C sees")."""
    replies = narrated = streams_mixed = 0
    for path, events in clips:
        voice = " ".join(clean_narration(events[0].narration).split()[:2])  # how the narration streams speak
        said = [text for _, text in cf.replies(model, processor, path)]
        in_voice = sum(text.startswith(voice + " ") for text in said)
        replies += len(said)
        narrated += in_voice
        streams_mixed += in_voice < len(said)
    return {"clips": len(clips), "replies": replies, "narration_voice": narrated, "other_voice": replies - narrated,
            "clips_with_other_voice": streams_mixed}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", required=True, help="model folders")
    parser.add_argument("--seeds", type=int, nargs=2, default=(4240, 4260), metavar=("FIRST", "STOP"))
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        clips = []
        for seed in range(*args.seeds):
            events = cf.random_events(seed, args.seconds)
            clips.append((cf.render(os.path.join(folder, f"{seed}.mp4"), events, args.seconds, seed), events))
        for path in args.model:
            model, processor = load_model_and_processor(path)[:2]
            print(path, narration_voice(model.eval(), processor, clips))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
