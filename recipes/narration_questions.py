"""Questions asked in a narration stream: a live chat's questions about the screen (and their answers), put into the
narration stream of the same video at their times.

A model trained on questions only in live chats (which open with a request) answers a question asked in a narration
stream (as `narrate` and the web demo run one) with a narration sentence about one time in five; streams like these
teach it to answer wherever it is asked (`question_share` of the study's plan: 38 of 42 colour questions in such
streams answered right, against 33; what it cost elsewhere is in recipes/README.md, demo model).
"""

from __future__ import annotations

from modeling_videollm_mod.processing_videollm_mod import as_messages


def chat_questions(conversation) -> list[tuple[dict, dict]]:
    """The (question, answer) pairs of a live chat: a user turn answered at its own time (the opening request is
    answered later, by the stream's replies)."""
    messages = as_messages(conversation)
    return [
        (question, answer)
        for question, answer in zip(messages, messages[1:], strict=False)
        if question["role"] == "user" and answer["role"] == "assistant" and answer["time"] == question["time"]
    ]


def split_stream(turn: dict, frames: int) -> tuple[dict, dict]:
    """A stream turn cut after its first `frames` frames; each part keeps its share of the learned leading frames."""
    first = {**turn, "num_frames": frames, "learn": min(turn["learn"], frames)}
    rest = {**turn, "num_frames": turn["num_frames"] - frames, "learn": max(turn["learn"] - frames, 0)}
    return first, rest


def with_questions(conversation, questions: list[tuple[dict, dict]], fps: float) -> list[dict]:
    """`conversation` (a stream conversation, `data_scripts._stream`) with each question and its answer said after the
    frame at its time: a stream turn that goes on past that frame is cut there; at a stream turn's last frame the pair
    comes after what is said there already. A question past the last frame is left out."""
    pending = sorted(questions, key=lambda pair: pair[0]["time"])
    out: list[dict] = []
    seen = -1  # the last frame of the streams so far

    def asked_by(frame: int) -> list[dict]:
        """The pending pairs asked at or before `frame`, taken off the queue."""
        taken = []
        while pending and round(pending[0][0]["time"] * fps) <= frame:
            taken += pending.pop(0)
        return taken

    for message in as_messages(conversation):
        if message["role"] == "stream":
            out += asked_by(seen)  # what was said at the previous stream's last frame came first
            last = round(message["time"] * fps)
            first = last - message["num_frames"] + 1
            while pending and round(pending[0][0]["time"] * fps) < last:
                frame = round(pending[0][0]["time"] * fps)  # >= first: earlier ones were said before this stream
                before, message = split_stream(message, frame - first + 1)
                out += [{**before, "time": frame / fps}, *asked_by(frame)]
                first = frame + 1
            seen = last
        out.append(message)
    return out + asked_by(seen)
