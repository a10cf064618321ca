"""Scene questions: short training rows that each show a few seconds of a training video and ask one question about
the screen (`data_scripts.synthetic.on_screen_question`: what is there, how many shapes, which colour, what just
happened), its answer learned and nothing else.

Why: the demo's commonest wrong answer names the second shape of a pair wrong ("I see a blue circle and a blue
circle." for a blue circle and a blue triangle). Its training asks about 1,200 questions, at one gap in three of the
live chats (and again in the narration streams of the same videos); a decoder that must bind colour to shape for two
shapes at once sees few such pairs. These rows ask at any gap of every training video, as cheap clips (the frames
since the gap's event): two a video add 1,800 questions for about a fifth more tokens. Their frames are not learned:
a clip's frames carry no reply, and learning them as silence would teach the model to say nothing at an event.

Tried for the demo (`--set scene_questions=2`): answers within their noise, narration worse; not shipped
(recipes/README.md, demo model).
"""

from __future__ import annotations

import random

from ..data_scripts._stream import floor_frame, message, stream, stream_row
from ..data_scripts.synthetic import Event, Video, on_screen_question, question_time

LEAD_FRAMES = 4  # a clip starts up to this many frames before the frame of the event it follows (drawn by row)


def scene_rows(videos, events: dict[str, list[dict]], per_video: int) -> list[dict]:
    """Up to `per_video` scene-question rows for each row of `videos` (a prepared dataset: `video_uid`, `video`,
    `fps`, `duration`), at distinct gaps between its events (`events`: `synthetic_events.json`), drawn by video id.
    A question is asked half-way through a gap, as the live chats ask; its clip runs from a little before the gap's
    event to the question's frame."""
    rows = []
    for video in videos:
        uid, fps = video["video_uid"], video["fps"]
        world = Video(uid, video["duration"], [Event.from_dict(e) for e in events[uid]])
        rng = random.Random(f"scene-questions-{uid}")
        gaps = list(range(len(world.events) - 1))
        last_frame = round(video["duration"] * fps)
        for index in sorted(rng.sample(gaps, min(per_video, len(gaps)))):
            t = question_time(world.events, index)
            question, answer = on_screen_question(rng, world, index, t)
            frame = floor_frame(t, fps, 0, last_frame)
            event_frame = floor_frame(world.events[index].narration_time, fps, 0, last_frame)
            first = max(event_frame - rng.randint(0, LEAD_FRAMES), 0)
            conversation = [
                stream(frame - first + 1, frame, fps, learn=False),
                message("user", question, frame / fps),
                message("assistant", answer, frame / fps, learn=1),
            ]
            rows.append(stream_row(uid, video["video"], fps, last_frame + 1, conversation, first))
    return rows
