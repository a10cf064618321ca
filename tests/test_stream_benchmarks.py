"""OVO-Bench and StreamingBench: their files read in the released schema (bad ones refused in one line naming the file
and the item) and fixed responses scored to hand-computed numbers, the official scripts' quirks included."""

import json
import os
import re

import pytest

from videollm_mod.errors import UserError
from videollm_mod.recipes import ovo_bench, streaming_bench


def write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


# ------------------------------------------------------------------------------------------------------------ OVO-Bench

OVO_RESULTS = {
    "backward": [
        {"id": 1, "task": "EPM", "response": "A", "ground_truth": "A"},
        {"id": 2, "task": "EPM", "response": "B. A cat", "ground_truth": "A"},  # the letter anywhere: 1
        {"id": 3, "task": "EPM", "response": None, "ground_truth": "C"},  # inference failed: 0
        {"id": 4, "task": "ASI", "response": "b", "ground_truth": "B"},  # case-sensitive: 0
    ],
    "realtime": [
        {"id": 5, "task": "OCR", "response": "D", "ground_truth": "D"},
        {"id": 6, "task": "OCR", "response": "", "ground_truth": "A"},  # empty: 0
    ],
    "forward": [
        {"id": 7, "task": "REC", "test_info": [{"response": "3", "count": 3}, {"response": "1 or 2", "count": 12},
                                               {"response": "three", "count": 3}, {"response": None, "count": 0}]},
        {"id": 8, "task": "SSR", "test_info": [{"response": "N", "type": 0}, {"response": "Yes", "type": 1},
                                               {"response": "no", "type": 0}, {"response": "Yes, No", "type": 0}]},
        {"id": 9, "task": "CRR", "test_info": [{"response": "Y", "type": 1}, {"response": None, "type": 1}]},
    ],
}  # fmt: skip


def test_ovo_bench_scores_equal_the_official_scripts():
    numbers = ovo_bench.score(OVO_RESULTS)
    # EPM 2/3, ASI 0, OCR 1/2; REC: "3" and "1 or 2" -> 12 right, "three" and None wrong; SSR: N, Yes, "Yes, No"
    # (holds "No") right, lower-case "no" wrong; CRR: Y right, None wrong
    assert numbers["tasks"] == {"EPM": 2 / 3, "ASI": 0.0, "OCR": 0.5, "REC": 0.5, "SSR": 0.75, "CRR": 0.5}
    assert numbers["groups"] == {"backward": 1 / 3, "realtime": 0.5, "forward": pytest.approx(1.75 / 3)}
    # the total is the mean of the six task scores, not of the three groups
    assert numbers["total"] == pytest.approx((2 / 3 + 0 + 0.5 + 0.5 + 0.75 + 0.5) / 6)
    assert numbers["items"] == {"EPM": 3, "ASI": 1, "OCR": 2, "REC": 4, "SSR": 4, "CRR": 2}
    assert ovo_bench.report(numbers).splitlines() == [
        "Task: EPM, Acc: 66.67", "Task: ASI, Acc: 0.00", "Backward Avg.: 33.33", "Task: OCR, Acc: 50.00",
        "Realtime Avg.: 50.00", "Task: REC, Acc: 50.00", "Task: SSR, Acc: 75.00", "Task: CRR, Acc: 50.00",
        "Forward Avg.: 58.33", "Total Avg.: 48.61",
    ]  # fmt: skip


def ovo_items():
    return [
        {"id": 1, "video": "a.mp4", "task": "EPM", "question": "q", "options": ["x", "y"], "gt": 1, "realtime": 8.0},
        {"id": 2, "video": "b.mp4", "task": "REC", "activity": "jump", "test_info": [{"realtime": 3.0, "count": 2}]},
        {"id": 3, "video": "c.mp4", "task": "CRR", "question": "q", "answer": "a",
         "test_info": [{"realtime": 2.0, "type": 1}]},
    ]  # fmt: skip


def test_ovo_bench_annotations_are_grouped_as_the_official_main(tmp_path):
    grouped = ovo_bench.read_annotations(write(tmp_path / "ovo_bench_new.json", ovo_items()))
    assert {group: [item["id"] for item in items] for group, items in grouped.items()} == {
        "backward": [1], "realtime": [], "forward": [2, 3]
    }  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda items: items[0].pop("gt"), "item 1 (EPM): no 'gt'"),
        (lambda items: items[1]["test_info"][0].pop("count"), "item 2 (REC): test_info[0] has no 'count'"),
        (lambda items: items[2].update(task="XYZ"), "item 3: task 'XYZ' is not an OVO-Bench task"),
    ],
)
def test_a_bad_ovo_bench_item_is_named_in_one_line(tmp_path, change, message):
    items = ovo_items()
    change(items)
    path = write(tmp_path / "ovo.json", items)
    with pytest.raises(UserError, match="^" + re.escape(f"{path}: {message}")):
        ovo_bench.read_annotations(path)
    with pytest.raises(UserError, match="no such annotation file"):
        ovo_bench.read_annotations(str(tmp_path / "missing.json"))


# -------------------------------------------------------------------------------------------------------- StreamingBench


def mc(task_type, answer, response, time_stamp="00:10"):
    question = {"task_type": task_type, "question": "q", "answer": answer, "time_stamp": time_stamp,
                "options": ["A. x", "B. y", "C. z", "D. w"]}  # fmt: skip
    if response is not None:
        question["videollm_mod"] = response
    return question


def test_streamingbench_real_time_scores_equal_count_py():
    data = [
        {"video_path": "v1.mp4", "questions": [mc("Object Perception", "A", "A"), mc("Object Perception", "B", "A. x"),
                                              mc("Counting", "C", "C is right"), mc("Counting", "D", "d")]},
        {"video_path": "v2.mp4", "questions": [mc("Counting", "A", None), mc("Counting", "A", "")]},  # not counted
    ]  # fmt: skip
    stats = streaming_bench.score(data, "real", "videollm_mod")
    assert stats["Object Perception"] == {"total": 2, "correct": 1, "accuracy": 0.5}
    assert stats["Counting"] == {"total": 2, "correct": 1, "accuracy": 0.5}  # first character "C" right, "d" wrong
    assert stats["total"] == {"total": 4, "correct": 2, "accuracy": 0.5}


def test_streamingbench_contextual_chains_are_flattened_and_have_no_total_row():
    data = [
        [
            {
                "video_path": "v.mp4",
                "questions": [mc("Misleading Context", "B", "B"), mc("Misleading Context", "A", "B")],
            }
        ]
    ]
    assert streaming_bench.score(data, "sqa", "videollm_mod") == {
        "Misleading Context": {"total": 2, "correct": 1, "accuracy": 0.5}
    }


def proactive(ground_truth_time, output, last_time, last_content):
    history = [{"time": 1.0, "content": "early"}, {"time": last_time, "content": last_content}]
    return {"task_type": "Proactive Output", "time_stamp": "00:00:00", "ground_truth_time_stamp": ground_truth_time,
            "ground_truth_output": output, "videollm_mod": {"dialog_history": history}}  # fmt: skip


def test_streamingbench_proactive_output_is_scored_by_its_last_turn_within_two_seconds():
    questions = [
        proactive("00:00:10", "red", 12.0, "the red one"),  # +2 s, inclusive: time and answer right
        proactive("00:10", "red", 7.9, "the red one"),  # 2.1 s early: neither
        proactive("00:00:8", "blue", 8.0, "a red one"),  # "00:00:8" reads 8 s: time right, answer wrong
    ]
    stats = streaming_bench.score([{"video_path": "v.mp4", "questions": questions}], "proactive", "videollm_mod")
    assert stats == {"Proactive Output": {"total": 3, "time_correct": 2, "answer_correct": 1,
                                          "time_accuracy": 2 / 3, "answer_accuracy": 1 / 3}}  # fmt: skip


@pytest.mark.parametrize("text, seconds", [("00:03:10", 190), ("00:24", 24), ("00:00:8", 8), ("75", 75)])
def test_time_stamps_read_as_the_official_scripts_read_them(text, seconds):
    assert streaming_bench.parse_time_stamp(text, "here") == seconds


def test_a_time_stamp_the_official_scripts_cannot_read_either_is_named(tmp_path):
    data = [{"video_path": "v1.mp4", "questions": [mc("Counting", "A", None, time_stamp="00:01.5")]}]
    path = write(tmp_path / "questions_real.json", data)
    with pytest.raises(
        UserError, match=rf"^{path}: video v1.mp4, question 0, time_stamp: time stamp '00:01.5' is not"
    ):
        streaming_bench.read_questions(path, "real")
    data[0]["questions"][0]["time_stamp"] = "00:01"
    data[0]["questions"][0].pop("answer")
    path = write(tmp_path / "q.json", data)
    with pytest.raises(UserError, match="^" + re.escape(f"{path}: video v1.mp4, question 0: no 'answer'") + "$"):
        streaming_bench.read_questions(path, "real")


def test_evaluate_re_scores_official_results_without_a_model(tmp_path, capsys):
    from cli_helpers import assert_user_error, run

    results, output = write(tmp_path / "results.json", OVO_RESULTS), tmp_path / "scores.json"
    status, out, _ = run(capsys, "evaluate", "--task", "ovo_bench", "--score-only", results, "--output", output)
    assert status == 0 and out.splitlines()[-1] == "Total Avg.: 48.61"
    assert json.loads(output.read_text())["tasks"]["SSR"] == 0.75
    status, _, err = run(capsys, "evaluate", "--task", "ovo_bench", "--score-only", tmp_path / "missing.json")
    assert_user_error(status, err, tmp_path / "missing.json", "no such result file")
    data = [{"video_path": "v.mp4", "questions": [mc("Counting", "A", "A")]}]
    status, out, _ = run(capsys, "evaluate", "--task", "streamingbench_real", "--score-only",
                         write(tmp_path / "real.json", data))  # fmt: skip
    assert status == 0 and "total: total 1, correct 1, accuracy 1.0000" in out
    status, _, err = run(capsys, "evaluate", "--task", "streamingbench_real", "--score-only",
                         tmp_path / "real.json", "--answer-key", "other")  # fmt: skip
    assert_user_error(status, err, "no question holds an answer under 'other'")


# ------------------------------------------------------------------------------------------------------- model answers


@pytest.fixture(scope="module")
def ovo_fixture(tmp_path_factory):
    """Three 4-s videos and an annotation file in OVO-Bench's released schema (one item per group, and one whose video
    is missing)."""
    from stream_helpers import random_video, write_video

    root = tmp_path_factory.mktemp("ovo")
    (root / "videos").mkdir()
    for name, seed in (("a.mp4", 0), ("b.mp4", 1), ("c.mp4", 2)):
        write_video(root / "videos" / name, random_video(8, seed=seed, size=48), fps=2)
    items = ovo_items()
    items[1]["video"] = "b.mp4"
    items.append({**items[0], "id": 4, "video": "gone.mp4"})
    return write(root / "ovo_bench_new.json", items), str(root / "videos")


class CountingAsker:
    def __init__(self):
        self.calls, self.questions = [], []

    def __call__(self, video, start, end, question):
        self.calls.append((os.path.basename(video), start, end, question.split("\n")[0]))
        self.questions.append(question)
        return "A"


def test_ovo_bench_items_are_asked_at_their_times_and_a_run_resumes(ovo_fixture, tmp_path):
    from videollm_mod.recipes.benchmark_inference import run_ovo_bench

    annotations, videos = ovo_fixture
    grouped, output, ask = ovo_bench.read_annotations(annotations), str(tmp_path / "results.json"), CountingAsker()
    results = run_ovo_bench(ask, grouped, videos, output)
    assert ask.calls == [
        ("a.mp4", 0.0, 8.0, "Question: q"), ("gone.mp4", 0.0, 8.0, "Question: q"),  # backward, at `realtime`
        ("b.mp4", 0.0, 3.0, "You're watching a video in which people may perform a certain type of action "
                            "repetively. The person performing this kind of action are referred to as 'they' in the "
                            "following statement. You're task is to count how many times have different people in "
                            "the video perform this kind of action in total. One complete motion counts as one. Now, "
                            "answer the following question: How many times did they jump?"),  # REC probe
        ("c.mp4", 0.0, 2.0, "You're responsible of answering questions based on the video content. The following "
                            "question are relevant to the latest frames, i.e. the end of the video."),  # CRR probe
    ]  # fmt: skip
    assert results["backward"][0] == {"id": 1, "video": "a.mp4", "task": "EPM", "question": "q", "response": "A",
                                      "ground_truth": "B"}  # fmt: skip
    assert json.loads(open(output).read()) == results
    again = CountingAsker()
    assert run_ovo_bench(again, grouped, videos, output) == results and again.calls == []  # resumed: nothing asked


def test_evaluate_answers_ovo_bench_with_the_demo_and_scores_it(ovo_fixture, tmp_path, capsys):
    from cli_helpers import run

    annotations, videos = ovo_fixture
    output = tmp_path / "results.json"
    status, out, err = run(capsys, "evaluate", "--task", "ovo_bench", "--annotations", annotations, "--video-root",
                           videos, "--output", output)  # fmt: skip
    assert status == 0, err
    results = json.loads(output.read_text())
    responses = [r["response"] for r in results["backward"]]
    assert isinstance(responses[0], str) and responses[1] is None  # the missing video: no response, the run went on
    assert "gone.mp4" in err and "unreadable" in err
    assert all(isinstance(p["response"], str) for item in results["forward"] for p in item["test_info"])
    assert out.splitlines()[-1] == "Total Avg.: " + f"{100 * ovo_bench.score(results)['total']:.2f}"


def test_the_streaming_protocol_answers_a_lone_question_as_the_offline_one(ovo_fixture, tmp_path, capsys):
    """Each fixture video holds one question or probe, so one session over the whole video, asked at that time,
    sees what the cut clip shows and must answer the same (automatic chunks and frame by frame alike)."""
    from cli_helpers import run

    annotations, videos = ovo_fixture
    answers = {}
    for protocol in ("offline", "streaming"):
        output = tmp_path / f"{protocol}.json"
        status, _, err = run(capsys, "evaluate", "--task", "ovo_bench", "--annotations", annotations, "--video-root",
                             videos, "--output", output, "--protocol", protocol)  # fmt: skip
        assert status == 0, err
        results = json.loads(output.read_text())
        answers[protocol] = [r["response"] for r in results["backward"]] + [
            p["response"] for item in results["forward"] for p in item["test_info"]
        ]
    assert answers["streaming"] == answers["offline"]
    assert answers["offline"][1] is None and all(isinstance(a, str) and a for a in answers["offline"][2:])


def test_streamingbench_questions_are_asked_over_their_context_and_a_run_resumes(tmp_path):
    from videollm_mod.recipes.benchmark_inference import run_streamingbench

    data = [
        {
            "video_path": "v1.mp4",
            "questions": [mc("Counting", "A", None, "00:01:30"), mc("Counting", "B", None, "00:20")],
        }
    ]
    data[0]["questions"][1]["options"] = ["x", "y", "z", "w"]  # options without letters get them, as the official
    output, ask = str(tmp_path / "real_results.json"), CountingAsker()
    answered = run_streamingbench(ask, data, "/videos", output, "videollm_mod", context_time=60)
    assert [call[:3] for call in ask.calls] == [("v1.mp4", 30, 90), ("v1.mp4", 0.0, 20)]
    assert "Options:\nA. x\nB. y\nC. z\nD. w\n\nThe best option is:" in ask.questions[1]
    assert [q["videollm_mod"] for q in answered[0]["questions"]] == ["A", "A"]
    assert json.loads(open(output).read()) == answered
    assert streaming_bench.score(answered, "real", "videollm_mod")["total"] == {
        "total": 2,
        "correct": 1,
        "accuracy": 0.5,
    }
    again = CountingAsker()
    run_streamingbench(again, data, "/videos", output, "videollm_mod", context_time=60)
    assert again.calls == []


def test_a_clip_past_the_videos_end_gets_no_answer_and_is_named(ovo_fixture):
    from videollm_mod.recipes.benchmark_inference import ClipAsker

    _, videos = ovo_fixture
    ask = ClipAsker(model=None, processor=None)  # never reached: the clip holds no frame
    assert ask(os.path.join(videos, "a.mp4"), 30.0, 90.0, "q") is None
    assert ask.unreadable == {os.path.join(videos, "a.mp4") + " [30, 90] s": "no frame in the clip"}  # the video stays


def sqa_chain():
    """One contextual chain: two videos of the same stream, three questions (options with and without letters)."""
    first = [mc("Misleading Context", "B", None, "00:00:30"), mc("Misleading Context", "C", None, "00:01:30")]
    second = [mc("Misleading Context", "D", None, "00:02:00")]
    second[0]["options"] = ["x", "y", "z", "w"]
    return [[{"video_path": "s1.mp4", "questions": first}, {"video_path": "s2.mp4", "questions": second}]]


def test_streamingbench_sqa_questions_carry_their_chains_ground_truth_and_a_run_resumes(tmp_path):
    from videollm_mod.recipes.benchmark_inference import run_streamingbench_sqa

    output, ask = str(tmp_path / "sqa_results.json"), CountingAsker()
    answered = run_streamingbench_sqa(ask, sqa_chain(), "/videos", output, "videollm_mod", context_time=60)
    assert [call[:3] for call in ask.calls] == [("s1.mp4", 0.0, 30), ("s1.mp4", 30, 90), ("s2.mp4", 60, 120)]
    opening = ("Respond with only the letter (A, B, C, or D) of the correct option.\n\n\n\nHere is the question. "
               "Answer it and don't confuse it with the previous conversation.\nQuestion: q\n\nOptions:\nA. x\nB. y\n"
               "C. z\nD. w\n\nThe best option is:")  # fmt: skip
    assert ask.questions[0].endswith(opening)  # the first of a chain: an empty context
    turn1 = ("At timestamp 00:00:30, the following question and answer occurred: Question: q; Options: A. x, B. y, "
             "C. z, D. w; Answer: B; ")  # fmt: skip
    turn2 = turn1.replace("00:00:30", "00:01:30").replace("Answer: B", "Answer: C")
    context = ("Here are the contextual information related to the video. Please answer the questions based on the "
               "contextual information: ")  # fmt: skip
    assert f"option.\n\n{context}{turn1}\n\nHere is the question." in ask.questions[1]  # the truth, not the model's A
    assert f"option.\n\n{context}{turn1}{turn2}\n\nHere is the question." in ask.questions[2]  # the chain's next video
    assert "Options:\nA. x\nB. y\nC. z\nD. w\n" in ask.questions[2]  # letters added, as the official
    assert streaming_bench.score(answered, "sqa", "videollm_mod") == {
        "Misleading Context": {"total": 3, "correct": 0, "accuracy": 0.0}
    }
    # resumed after the first answer: the next question still gets it as context
    partial = sqa_chain()
    partial[0][0]["questions"][0]["videollm_mod"] = "B"
    write(tmp_path / "partial.json", partial)
    again = CountingAsker()
    run_streamingbench_sqa(again, sqa_chain(), "/videos", str(tmp_path / "partial.json"), "videollm_mod", 60)
    assert len(again.calls) == 2 and again.questions == ask.questions[1:]


class PollingAsker:
    """Frames at 2 fps; says "Yes" to the timing poll once it has seen `yes_from` seconds, then answers `output`."""

    def __init__(self, yes_from=None, output="It shows 3."):
        self.yes_from, self.output, self.asked = yes_from, output, []

    def clip(self, video, start, end):
        times = [start + i / 2 for i in range(int((end - start) * 2) + 1)]
        return times, times  # each frame stands for its own time

    def ask_frames(self, frames, times, question):
        self.asked.append((times[0], times[-1], question.split("Question: ")[1].split("\n")[0]))
        if "Is it the right time" not in question:
            return self.output
        return "Yes." if self.yes_from is not None and times[-1] >= self.yes_from else "No"


def proactive_question():
    return {"task_type": "Proactive Output", "question": 'When the score shows 3, output "3".', "time_stamp": "00:10",
            "ground_truth_time_stamp": "00:00:13", "ground_truth_output": "3"}  # fmt: skip


def test_streamingbench_proactive_is_polled_every_second_until_yes_then_asked():
    from videollm_mod.recipes.benchmark_inference import poll_proactive

    ask = PollingAsker(yes_from=14)
    result = poll_proactive(ask, "v.mp4", proactive_question())
    poll = 'When the score shows 3, output "3". Is it the right time to output "3"? You can only answer yes or no.'
    assert ask.asked == [(10, 11, poll), (10, 12, poll), (10, 13, poll), (10, 14, poll),
                         (10, 14, 'When the score shows 3, output "3".')]  # fmt: skip
    assert result["answered"] == 14
    assert [(t["role"], t["time"], t["content"]) for t in result["dialog_history"][-4:]] == [
        ("user", 14, poll), ("assistant", 14, "Yes."), ("user", 14, 'When the score shows 3, output "3".'),
        ("assistant", 14, "It shows 3."),
    ]  # fmt: skip
    data = [{"video_path": "v.mp4", "questions": [{**proactive_question(), "videollm_mod": result}]}]
    assert streaming_bench.score(data, "proactive", "videollm_mod")["Proactive Output"]["answer_accuracy"] == 1.0


def test_streamingbench_proactive_that_never_says_yes_is_polled_to_four_seconds_past_the_truth(tmp_path):
    from videollm_mod.recipes.benchmark_inference import run_streamingbench_proactive

    data = [{"video_path": "v.mp4", "questions": [proactive_question()]}]
    output = str(tmp_path / "proactive_results.json")
    answered = run_streamingbench_proactive(PollingAsker(), data, "/videos", output, "videollm_mod")
    result = answered[0]["questions"][0]["videollm_mod"]
    assert result["answered"] is False and [t["time"] for t in result["dialog_history"][1::2]] == list(range(11, 18))
    stats = streaming_bench.score(json.loads(open(output).read()), "proactive", "videollm_mod")
    assert stats["Proactive Output"]["time_correct"] == 0  # the last turn, at 17 s, is 4 s late
    again = PollingAsker()
    run_streamingbench_proactive(again, data, "/videos", output, "videollm_mod")
    assert again.asked == []  # resumed: its dialog ends in a non-empty turn


def test_evaluate_runs_streamingbench_sqa_and_proactive_with_the_demo(ovo_fixture, tmp_path, capsys):
    from cli_helpers import run

    _, videos = ovo_fixture
    sqa = sqa_chain()
    for video in sqa[0]:
        video["video_path"] = "a.mp4"
        for question in video["questions"]:
            question["time_stamp"] = "00:00:03"
    question = {**proactive_question(), "time_stamp": "00:00:01", "ground_truth_time_stamp": "00:00:02"}
    files = {"sqa": write(tmp_path / "questions_sqa.json", sqa),
             "proactive": write(tmp_path / "questions_proactive.json", [{"video_path": "b.mp4", "questions": [question]}])}  # fmt: skip
    for task, protocol in (("sqa", "offline"), ("proactive", "offline"), ("proactive", "streaming")):
        output = tmp_path / f"{task}-{protocol}.json"
        status, out, err = run(capsys, "evaluate", "--task", f"streamingbench_{task}", "--annotations", files[task],
                               "--video-root", videos, "--output", output, "--protocol", protocol)  # fmt: skip
        assert status == 0, err
        results = json.loads(output.read_text())
        if task == "sqa":
            assert all(isinstance(q["videollm_mod"], str) for v in results[0] for q in v["questions"])
            continue
        history = results[0]["questions"][0]["videollm_mod"]["dialog_history"]
        if protocol == "streaming":  # the question at its time, then what the model said
            assert history[0] == {"role": "user", "content": question["question"], "time": 1.0} and len(history) > 1
        else:  # the first poll, a second after the question
            assert [(t["role"], t["time"]) for t in history[:2]] == [("user", 2), ("assistant", 2)]
        status, out, _ = run(capsys, "evaluate", "--task", "streamingbench_proactive", "--score-only", output)
        assert status == 0 and "Proactive Output: total 1, time_correct" in out
