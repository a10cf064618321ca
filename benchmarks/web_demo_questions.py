"""Responsiveness of the web demo's stream: how soon a question typed mid-stream is taken once the model is free.

    python benchmarks/web_demo_questions.py --questions 14

The web demo (`videollm_mod.web_demo.LiveNarration`) streams a 20 s held-out synthetic clip paced to real time, as
the app does, with the demo model (or `--model`), while this script asks questions at random moments from another
thread, as the app's question box does. Every forward of the session (frames, or a question and its reply) is timed;
for each question it reports, in units of the frame interval:
- "after the model is free": from the end of the last forward before the question was taken (or from sending, if
  the model was idle) to the moment it was taken; the target is below one frame interval;
- "after sending": the same from the moment the question was sent (includes waiting for a forward in progress,
  e.g. a spontaneous reply being generated).
"""

import argparse
import random
import statistics
import tempfile
import threading
import time

from modeling_videollm_mod import DEFAULT_THRESHOLD
from videollm_mod.loading import load_model_and_processor
from videollm_mod.web_demo import LiveNarration, render_example_video


class TimedNarration(LiveNarration):
    """A `LiveNarration` whose sessions record `(what, start, end, first argument)` of every forward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spans: list[tuple[str, float, float, object]] = []

    def new_session(self, threshold: float = DEFAULT_THRESHOLD):
        session = super().new_session(threshold)
        for name in ("push_frames", "push_query"):
            setattr(session, name, self._timed(name, getattr(session, name)))
        return session

    def _timed(self, name, push):
        def timed(first, *args, **kwargs):
            start = time.monotonic()
            events = push(first, *args, **kwargs)
            self.spans.append((name, start, time.monotonic(), first))
            return events

        return timed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or Hub repo (default: the shipped demo)")
    parser.add_argument("--questions", type=int, default=14, help="questions, over streams of the 20 s clip")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    model, processor = load_model_and_processor(args.model, device="cpu")
    interval = 1 / args.fps
    after_free, after_sending = [], []
    with tempfile.TemporaryDirectory() as folder:
        clip = render_example_video(folder)
        while len(after_free) < args.questions:
            live = TimedNarration(model, processor)
            stream = threading.Thread(target=lambda live=live: list(live.narrate(clip, args.fps, realtime=True)))
            stream.start()
            time.sleep(1.0)
            while stream.is_alive() and len(after_free) < args.questions:
                time.sleep(rng.uniform(0.8, 1.8))
                question, sent = f"question {len(after_free)}?", time.monotonic()
                live.ask(question)
                while not (taken := [s for n, s, _, q in list(live.spans) if n == "push_query" and q == question]):
                    time.sleep(0.005)
                free = max([sent] + [end for _, _, end, _ in list(live.spans) if end <= taken[0]])
                after_free.append((taken[0] - free) / interval)
                after_sending.append((taken[0] - sent) / interval)
            stream.join()
    for name, values in (("after the model is free", after_free), ("after sending", after_sending)):
        print(f"question taken {name}: median {statistics.median(values):.3f}, max {max(values):.3f} frame intervals")
    print(f"({len(after_free)} questions, frame interval {interval:g} s)")


if __name__ == "__main__":
    main()
