"""A model's answers on the streaming benchmarks, by their official offline protocol: the clip is cut at each question's
(or probe's) time and the model asked again, never streamed across questions. Results are written in each benchmark's
official result format, so that `ovo_bench.score` / `streaming_bench.score` (and the official scripts) read them.

The model watches the clip through its streaming session (frames at `fps` on the decoder's grid, from the clip's
start to its end) and is asked the question after the last frame; the answer is its reply to that question. Whatever
it says by itself while the clip plays is context, as in VideoLLM-online's own runs of these benchmarks.

StreamingBench's contextual questions (sqa) carry the earlier questions of their chain with their ground-truth
answers in the prompt; its proactive questions are polled every second ("is it the right time to output ...?"),
the question itself asked at the first yes (`poll_proactive`).

`--protocol streaming`, which no peer reports: OVO-Bench, one session per video, every question and probe pushed at
its time, the answers read from what the model says as the video plays (the video decoded once, not once per
question); StreamingBench proactive, the question pushed at its time and the model's own decision to speak in place
of the polling (`watch_proactive`).

Results are written after every item (to a temporary name, then renamed), and a run given an existing results file
skips the items already answered there, so an interrupted run resumes where it stopped. A video that cannot be read
is counted and named at the end; the run goes on (its items get no response, scored 0 as the official scripts do).
"""

from __future__ import annotations

import json
import logging
import math
import os

from modeling_videollm_mod import VideoDecodingError, load_video, video_num_frames

from ..files import read_json, write_text_atomically
from .free_running import answers_to
from .generation_settings import SENTENCE_TOKENS

logger = logging.getLogger(__name__)

FPS = 2.0

# The official prompts (OVO-Bench `utils/OVOBench.py`, StreamingBench `src/benchmark/StreamingBench.py`), as text.
OVO_CHOICE = (
    "Question: {question}\nOptions:\n{options}\nRespond only with the letter corresponding to your chosen option "
    "(e.g., A, B, C).\nDo not include any additional text or explanation in your response."
)
OVO_REC = (
    "You're watching a video in which people may perform a certain type of action repetively. The person performing "
    "this kind of action are referred to as 'they' in the following statement. You're task is to count how many times "
    "have different people in the video perform this kind of action in total. One complete motion counts as one. Now, "
    "answer the following question: How many times did they {activity}?\nProvide your answer as a single number "
    "(e.g., 0, 1, 2, 3…) indicating the total count.\nDo not include any additional text or explanation in your response."
)
OVO_SSR = (
    "You're watching a tutorial video which contain a sequential of steps. The following is one step from the whole "
    "procedures: {step}\nYour task is to determine if the man or woman in the video is currently performing this step."
    "\nAnswer only with “Yes” or “No”.\nDo not include any additional text or explanation in your response."
)
OVO_CRR = (
    "You're responsible of answering questions based on the video content. The following question are relevant to the "
    "latest frames, i.e. the end of the video.\n{question}\nDecide whether existing visual content, especially latest "
    "frames, i.e. frames that near the end of the video, provide enough information for answering the question.\n"
    "Answer only with “Yes” or “No”.\nDo not include any additional text or explanation in your response."
)
STREAMINGBENCH_CHOICE = (
    "You are an advanced video question-answering AI assistant. You have been provided with some frames from the video "
    "and a multiple-choice question related to the video. Your task is to carefully analyze the video and provide the "
    "best answer to question, choosing from the four options provided. Respond with only the letter (A, B, C, or D) of "
    "the correct option.\n\nQuestion: {question}\n\nOptions:\n{options}\n\nThe best option is:"
)
STREAMINGBENCH_SQA = (
    "You are an advanced video question-answering AI assistant. You have been provided with a video and a "
    "multiple-choice question related to the video. Your task is to carefully analyze the video and the provided "
    "context to answer the question, choosing from the four options provided. Respond with only the letter (A, B, C, "
    "or D) of the correct option.\n\n{context}\n\nHere is the question. Answer it and don't confuse it with the "
    "previous conversation.\nQuestion: {question}\n\nOptions:\n{options}\n\nThe best option is:"
)
SQA_CONTEXT_OPENING = (
    "Here are the contextual information related to the video. Please answer the questions based on the contextual "
    "information: "
)
SQA_CONTEXT_TURN = "At timestamp {time}, the following question and answer occurred: Question: {question}; Options: {options}; Answer: {answer}; "  # noqa: E501
STREAMINGBENCH_PROACTIVE = (
    "You are an advanced image question-answering AI assistant. You have been provided with images and a question "
    "related to the images. Your task is to carefully analyze the images and provide the answer to the question. You "
    "need to carefully confirm whether the images content meet the conditions of the question, and then output the "
    "correct content.\n\nQuestion: {question}\n\nThe answer is:\n"
)
PROACTIVE_POLL = '{question} Is it the right time to output "{output}"? You can only answer yes or no.'
PROACTIVE_OVERTIME = 4  # seconds after the ground-truth time that the official polling goes on


class ClipAsker:
    """Asks a model questions about clips of videos (one fresh streaming session per question)."""

    def __init__(self, model, processor, fps: float = FPS, max_new_tokens: int = SENTENCE_TOKENS):
        self.model, self.processor, self.fps, self.max_new_tokens = model, processor, fps, max_new_tokens
        self.unreadable: dict[str, str] = {}  # video -> why

    def __call__(self, video: str, start: float, end: float, question: str) -> str | None:
        """The model's answer to `question` after the frames of `video` from `start` to `end` seconds; None when the
        video cannot be read (counted in `unreadable`)."""
        clip = self.clip(video, start, end)
        return None if clip is None else self.ask_frames(*clip, question)

    def clip(self, video: str, start: float, end: float):
        """`(frames, times)` of `video` from `start` to `end` seconds on the model's grid; None when the video cannot
        be read or the clip holds no frame (counted in `unreadable`)."""
        if video in self.unreadable:
            return None
        first, stop = math.ceil(start * self.fps - 1e-6), math.floor(end * self.fps + 1e-6) + 1
        try:
            if first >= video_num_frames(video, self.fps):  # the clip starts past the video's end: this item only
                self.unreadable[f"{video} [{start:g}, {end:g}] s"] = "no frame in the clip"
                return None
            return load_video(video, fps=self.fps, start_frame=first, stop_frame=max(stop, first + 1))
        except (VideoDecodingError, FileNotFoundError) as error:
            self.cannot_read(video, error)
            return None

    def ask_frames(self, frames, times, question: str) -> str:
        """The answer to `question` asked after the last of `frames`."""
        query = (float(times[-1]), question)
        return answers_to(self.watch(frames, times, [query]), [query])[0] or ""

    def watch(self, frames, times, queries: list[tuple[float, str]]) -> list:
        """What a fresh session says over `frames`, the `(time, text)` queries pushed at their times."""
        session = self.model.stream_session(self.processor, max_new_tokens=self.max_new_tokens)
        for time, text in queries:
            session.push_query(text, time=time)
        return session.push_frames(frames, times=[float(t) for t in times]) + session.flush()

    def stream(self, video: str, queries: list[tuple[float, str]]) -> list[str | None]:
        """One session over the whole `video`, each `(time, question)` pushed at its time; the reply to each, in
        order (None each when the video cannot be read, counted in `unreadable`)."""
        try:
            # a question timed past the video's last frame is asked at that frame, as on a clip cut there
            last = (video_num_frames(video, self.fps) - 1) / self.fps
            queries = [(min(time, last), question) for time, question in queries]
            events = list(self.model.stream_generate(video, self.processor, fps=self.fps, max_new_tokens=self.max_new_tokens,
                                                     queries=queries))  # fmt: skip
        except (VideoDecodingError, FileNotFoundError) as error:
            self.cannot_read(video, error)
            return [None] * len(queries)
        return [answer or "" for answer in answers_to(events, queries)]

    def cannot_read(self, video: str, error: Exception) -> None:
        self.unreadable[video] = str(error)
        logger.warning("%s: cannot be read, its items get no response (%s)", video, error)


def ovo_prompt(item: dict, probe: int | None = None) -> str:
    task = item["task"]
    if probe is None:
        options = "; ".join(f"{chr(65 + i)}. {option}" for i, option in enumerate(item["options"])) + ";"
        return OVO_CHOICE.format(question=item["question"], options=options)
    if task == "REC":
        return OVO_REC.format(activity=item["activity"])
    if task == "SSR":
        return OVO_SSR.format(step=item["test_info"][probe]["step"])
    return OVO_CRR.format(question=item["question"])


def ovo_queries(group: str, item: dict) -> list[tuple[float, str]]:
    """`(time, prompt)` of an item: its question at `realtime`, or (forward) each probe at its own `realtime`."""
    if group == "forward":
        return [(probe["realtime"], ovo_prompt(item, i)) for i, probe in enumerate(item["test_info"])]
    return [(item["realtime"], ovo_prompt(item))]


def ovo_result(group: str, item: dict, responses: list[str | None]) -> dict:
    """An item's entry of the official result file, with its responses (one per query of `ovo_queries`)."""
    if group == "forward":
        info = [{**probe, "response": r} for probe, r in zip(item["test_info"], responses, strict=True)]
        return {**item, "test_info": info}
    return {"id": item["id"], "video": item["video"], "task": item["task"], "question": item["question"],
            "response": responses[0], "ground_truth": chr(65 + item["gt"])}  # fmt: skip


def answered_ovo_items(output: str) -> dict[tuple[str, object], dict]:
    """`(group, id) -> result` of a results file from an earlier run (none if it does not exist)."""
    done = read_json(output, "results file") if os.path.exists(output) else {}
    return {(group, result["id"]): result for group, results in done.items() for result in results}


def run_ovo_bench(ask: ClipAsker, annotations: dict[str, list[dict]], video_root: str, output: str) -> dict:
    """Answer every OVO-Bench item (`ovo_bench.read_annotations`) into the official result file `output`, each
    question or probe on its own clip."""
    answered = answered_ovo_items(output)
    results = {group: [] for group in annotations}
    for group, items in annotations.items():
        for item in items:
            result = answered.get((group, item["id"]))
            if result is None:
                video = os.path.join(video_root, item["video"])
                result = ovo_result(group, item, [ask(video, 0.0, t, q) for t, q in ovo_queries(group, item)])
            results[group].append(result)
            write_text_atomically(output, json.dumps(results, indent=1) + "\n")
    write_text_atomically(output, json.dumps(results, indent=1) + "\n")
    return results


def lettered(options) -> list[str]:
    """Options as the official prompts give them: "A. ..." (added where the file has none)."""
    options = list(options or [])
    if options and not str(options[0]).startswith("A."):
        options = [f"{chr(65 + i)}. {option}" for i, option in enumerate(options)]
    return options


def clip_start(end: float, context_time: float) -> float:
    """Where a question's clip starts: `context_time` seconds before its time, or the video's start (<= 0: all)."""
    return max(0.0, end - context_time) if context_time > 0 else 0.0


def run_streamingbench(ask: ClipAsker, data: list, video_root: str, output: str, answer_key: str,
                       context_time: float) -> list:  # fmt: skip
    """Answer every multiple-choice question of a StreamingBench question file (real-time or omni-source), each from
    `context_time` seconds before its time stamp to it, into the question file `output` (answers under
    `answer_key`)."""
    from .streaming_bench import parse_time_stamp

    if os.path.exists(output):
        data = read_json(output, "results file")
    for video in data:
        path = os.path.join(video_root, video["video_path"])
        for question in video["questions"]:
            if question.get(answer_key):
                continue
            end = parse_time_stamp(question["time_stamp"], path)
            options = "\n".join(lettered(question.get("options")))
            prompt = STREAMINGBENCH_CHOICE.format(question=question["question"], options=options)
            question[answer_key] = ask(path, clip_start(end, context_time), end, prompt)
            write_text_atomically(output, json.dumps(data, indent=1) + "\n")
    write_text_atomically(output, json.dumps(data, indent=1) + "\n")
    return data


def run_streamingbench_sqa(ask: ClipAsker, data: list, video_root: str, output: str, answer_key: str,
                           context_time: float) -> list:  # fmt: skip
    """StreamingBench's contextual questions (`questions_sqa.json`: chains of videos), as `StreamingBenchSQA.py` asks
    them: each on its clip, after the earlier questions of its chain with their ground-truth answers. A resumed run
    gives a question the context of every earlier one, answered before or not (the official script forgets the
    questions it skips, so that a resumed run of it asks differently from an uninterrupted one)."""
    from .streaming_bench import parse_time_stamp

    if os.path.exists(output):
        data = read_json(output, "results file")
    for chain in data:
        context = ""
        for video in chain:
            path = os.path.join(video_root, video["video_path"])
            for question in video["questions"]:
                options = lettered(question.get("options"))
                if not question.get(answer_key):
                    end = parse_time_stamp(question["time_stamp"], path)
                    prompt = STREAMINGBENCH_SQA.format(context=context, question=question["question"],
                                                       options="\n".join(options))  # fmt: skip
                    question[answer_key] = ask(path, clip_start(end, context_time), end, prompt)
                    write_text_atomically(output, json.dumps(data, indent=1) + "\n")
                context = (context or SQA_CONTEXT_OPENING) + SQA_CONTEXT_TURN.format(
                    time=question["time_stamp"], question=question["question"], options=", ".join(options),
                    answer=question["answer"],
                )  # fmt: skip
    write_text_atomically(output, json.dumps(data, indent=1) + "\n")
    return data


def turn(role: str, content: str, time: float) -> dict:
    return {"role": role, "content": content, "time": time}


def proactive_clip(ask: ClipAsker, path: str, question: dict):
    """`(start, last, clip)` of a proactive question: its time, the ground-truth time + 4 s (the official polling's
    end), and the clip between them (`ClipAsker.clip`: None when the video cannot be read)."""
    from .streaming_bench import parse_time_stamp

    start = parse_time_stamp(question["time_stamp"], path)
    last = parse_time_stamp(question["ground_truth_time_stamp"], path) + PROACTIVE_OVERTIME
    return start, last, ask.clip(path, start, last)


def poll_proactive(ask: ClipAsker, path: str, question: dict) -> dict | None:
    """The official protocol (`StreamingBenchProactive.py`): every second from the question's time + 1 s to the
    ground-truth time + 4 s, the clip from the question's time to now is asked whether it is time to output the
    answer; at the first reply holding "yes" (any case), the question itself is asked on that clip and the polling
    stops. Returns `{"answered": second or False, "dialog_history": [...]}`; None when the video cannot be read."""
    start, last, clip = proactive_clip(ask, path, question)  # decoded once; each poll sees its first frames
    if clip is None:
        return None
    frames, times = clip
    poll = PROACTIVE_POLL.format(question=question["question"], output=question["ground_truth_output"])
    history, answered = [], False
    for now in range(start + 1, last + 1):
        seen = sum(float(t) <= now + 1e-6 for t in times)
        reply = ask.ask_frames(frames[:seen], times[:seen], STREAMINGBENCH_PROACTIVE.format(question=poll))
        history += [turn("user", poll, now), turn("assistant", reply, now)]
        if "yes" in reply.strip().lower():
            prompt = STREAMINGBENCH_PROACTIVE.format(question=question["question"])
            output = ask.ask_frames(frames[:seen], times[:seen], prompt)
            history += [turn("user", question["question"], now), turn("assistant", output, now)]
            answered = now
            break
    return {"answered": answered, "dialog_history": history}


def watch_proactive(ask: ClipAsker, path: str, question: dict) -> dict | None:
    """The model's own when-to-speak head instead of polling: one session over the same clip, the question pushed at
    its first frame; the dialog is the question, the answer given at once, and the first reply the model makes by
    itself after it (the one scored, when there is one)."""
    clip = proactive_clip(ask, path, question)[2]
    if clip is None:
        return None
    frames, times = clip
    events = ask.watch(frames, times, [(float(times[0]), question["question"])])
    asked = next(i for i, event in enumerate(events) if event.role == "user")
    said = [event for event in events[asked + 1 :] if event.role == "assistant"][:2]
    history = [turn("user", question["question"], float(times[0]))]
    history += [turn("assistant", event.text, event.time) for event in said]
    return {"answered": said[1].time if len(said) > 1 else False, "dialog_history": history}


def run_streamingbench_proactive(ask: ClipAsker, data: list, video_root: str, output: str, answer_key: str,
                                 streaming: bool = False) -> list:  # fmt: skip
    """Every proactive-output question of `questions_proactive.json` by the official polling (`poll_proactive`) or,
    with `streaming`, by the model's own decisions (`watch_proactive`), into the question file `output` (resumed:
    a question whose dialog ends in a non-empty turn is done, as the official script has it)."""
    if os.path.exists(output):
        data = read_json(output, "results file")
    answer = watch_proactive if streaming else poll_proactive
    for video in data:
        path = os.path.join(video_root, video["video_path"])
        for question in video["questions"]:
            done = question.get(answer_key)
            if done and done.get("dialog_history") and done["dialog_history"][-1]["content"]:
                continue
            question[answer_key] = answer(ask, path, question)
            write_text_atomically(output, json.dumps(data, indent=1) + "\n")
    write_text_atomically(output, json.dumps(data, indent=1) + "\n")
    return data


def run_ovo_bench_streaming(ask: ClipAsker, annotations: dict[str, list[dict]], video_root: str, output: str) -> dict:
    """OVO-Bench by the streaming protocol, into the official result format (resumed video by video)."""
    answered = answered_ovo_items(output)
    by_video: dict[str, list[tuple[str, dict]]] = {}
    for group, items in annotations.items():
        for item in items:
            by_video.setdefault(item["video"], []).append((group, item))
    results = {group: {} for group in annotations}
    for video, items in by_video.items():
        if all((g, item["id"]) in answered for g, item in items):
            for g, item in items:
                results[g][item["id"]] = answered[(g, item["id"])]
            continue
        queries = [ovo_queries(g, item) for g, item in items]
        answers = iter(
            ask.stream(os.path.join(video_root, video), [q for item_queries in queries for q in item_queries])
        )
        for (g, item), item_queries in zip(items, queries, strict=True):
            results[g][item["id"]] = ovo_result(g, item, [next(answers) for _ in item_queries])
        ordered = {g: [results[g][i["id"]] for i in annotations[g] if i["id"] in results[g]] for g in annotations}
        write_text_atomically(output, json.dumps(ordered, indent=1) + "\n")
    ordered = {g: [results[g][i["id"]] for i in annotations[g]] for g in annotations}
    write_text_atomically(output, json.dumps(ordered, indent=1) + "\n")
    return ordered
