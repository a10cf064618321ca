"""Free-running evaluation: replies vs answers, re-timed baselines, and `videollm-mod evaluate --free-running`."""

import json
import random

import pytest
import torch

from modeling_videollm_mod import StreamEvent, VideoLLMMoDForCausalLM
from videollm_mod.recipes.free_running import retimed, split_replies


def test_answers_are_the_replies_right_after_a_query():
    events = [
        StreamEvent(0.0, "user", "Narrate."),
        StreamEvent(0.0, "assistant", "A red circle appears."),
        StreamEvent(2.5, "assistant", "The red circle moves up."),
        StreamEvent(3.0, "user", "What now?"),
        StreamEvent(3.0, "assistant", "A red circle."),
    ]
    spontaneous, answers = split_replies(events)
    assert spontaneous == [(2.5, "The red circle moves up.")]
    assert answers == [(0.0, "A red circle appears."), (3.0, "A red circle.")]


def test_periodic_baseline_spreads_the_replies_evenly_in_their_order():
    times = [i / 2 for i in range(10)]  # 10 frames at 2 fps
    replies = [(0.5, "a"), (0.5, "b"), (4.5, "c")]
    assert retimed(replies, times, None) == [(0.5, "a"), (2.5, "b"), (4.0, "c")]  # frames int((k + 0.5) * 10 / 3)


def test_random_baseline_keeps_the_count_and_the_order_of_the_texts():
    times = [i / 2 for i in range(10)]
    moved = retimed([(1.0, "a"), (1.5, "b"), (2.0, "c")], times, random.Random(0))
    assert [text for _, text in moved] == ["a", "b", "c"] and len({t for t, _ in moved}) == 3
    assert [t for t, _ in moved] == sorted(t for t, _ in moved) and all(t in times for t, _ in moved)


@pytest.fixture(scope="module")
def tiny_model_and_processor(tmp_path_factory):
    from modeling_videollm_mod import VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
    from videollm_mod.presets import tiny_config
    from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids

    tokenizer = build_stream_tokenizer(["C sees a red circle appear.", "Please narrate."], vocab_size=300)
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), image_size=24, **stream_token_ids(tokenizer))
    processor = VideoLLMMoDProcessor(image_processor=VideoLLMMoDFrameProcessor(size=24), tokenizer=tokenizer,
                                     frame_num_tokens=config.frame_num_tokens)  # fmt: skip
    return VideoLLMMoDForCausalLM(config).eval(), processor


def test_evaluate_free_running_scores_every_policy_against_the_rows_replies(tmp_path, tiny_model_and_processor):
    from videollm_mod import cli
    from videollm_mod.data_scripts import prepare_ego4d_narration
    from videollm_mod.data_scripts._hub import load_prepared_dataset
    from videollm_mod.data_scripts.synthetic import generate_dataset

    model, processor = tiny_model_and_processor
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    paths = generate_dataset(str(tmp_path / "syn"), num_videos=2, seconds=6, fps=4, resolution=24, seed=7,
                             num_coin_videos=0, val_fraction=1.0, test_fraction=0.0)  # fmt: skip
    prepare_ego4d_narration.main(["--annotation-dir", paths["ego4d_annotations"], "--video-root",
                                  paths["ego4d_videos"], "--output-dir", str(tmp_path / "data")])  # fmt: skip
    out = tmp_path / "metrics.json"
    assert cli.main(["evaluate", "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "data"), "--config",
                     "raw", "--split", "val", "--video-root", paths["ego4d_videos"], "--free-running", "--baselines",
                     "--output", str(out), "--plot", str(tmp_path / "timelines"),
                     "--predictions", str(tmp_path / "predictions.jsonl")]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    policies = ["model", "never_speak", "random_same_rate", "periodic_same_rate", "blind"]
    assert list(report["results"])[1:] == policies and list(report["free_running_results"]) == policies
    free = report["free_running_results"]
    rows = load_prepared_dataset(str(tmp_path / "data"), "raw")["val"]
    references = sum(m["role"] == "assistant" for row in rows for m in row["conversation"])
    assert {free[p]["references"] for p in policies} == {references}
    assert free["never_speak"]["replies"] == 0 and free["never_speak"]["f1"] == 0.0
    # re-timed baselines say what the model said, elsewhere
    assert free["random_same_rate"]["replies"] == free["periodic_same_rate"]["replies"] == free["model"]["replies"]
    # one timeline per row, named by its index and video
    assert sorted(p.name for p in (tmp_path / "timelines").iterdir()) == [
        f"{i:04d}-{row['video_uid']}.png" for i, row in enumerate(rows)
    ]
    # one prediction record per row; re-scored without a model, they give the same numbers
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["video_uid"] for r in records] == [row["video_uid"] for row in rows]
    rescored = tmp_path / "rescored.json"
    assert cli.main(["evaluate", "--score-only", str(tmp_path / "predictions.jsonl"), "--baselines",
                     "--output", str(rescored)]) == 0  # fmt: skip
    assert json.loads(rescored.read_text())["free_running_results"] == free


def test_score_only_names_the_line_and_field_a_prediction_record_lacks(tmp_path, capsys):
    from videollm_mod import cli

    path = tmp_path / "predictions.jsonl"
    record = {"times": [0.0], "references": [], "questions": [], "events": []}
    path.write_text(json.dumps(record) + "\n" + json.dumps({k: v for k, v in record.items() if k != "events"}) + "\n")
    assert cli.main(["evaluate", "--score-only", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path} line 2: no field 'events'" in err, err
    assert cli.main(["evaluate", "--score-only", str(path), "--baselines"]) == 1  # baselines need the blind streams
    assert f"{path} line 1: no field 'blind_events'" in capsys.readouterr().err


def test_rows_streamed_in_batches_say_what_they_say_one_at_a_time(tmp_path, tiny_model_and_processor):
    from videollm_mod.data_scripts import prepare_ego4d_narration
    from videollm_mod.data_scripts._hub import load_prepared_dataset
    from videollm_mod.data_scripts.synthetic import generate_dataset
    from videollm_mod.recipes.free_running import stream_predictions

    model, processor = tiny_model_and_processor
    paths = generate_dataset(str(tmp_path / "syn"), num_videos=3, seconds=6, fps=4, resolution=24, seed=11,
                             num_coin_videos=0, val_fraction=1.0, test_fraction=0.0)  # fmt: skip
    prepare_ego4d_narration.main(["--annotation-dir", paths["ego4d_annotations"], "--video-root",
                                  paths["ego4d_videos"], "--output-dir", str(tmp_path / "data")])  # fmt: skip
    rows = load_prepared_dataset(str(tmp_path / "data"), "raw")["val"]
    run = dict(model=model, processor=processor, dataset=rows, video_root=paths["ego4d_videos"], blind=True)
    alone, batched = stream_predictions(**run), stream_predictions(**run, batch_size=2)  # batches of 2 and 1
    assert len(alone) == len(rows) == 3
    assert sum(e.role == "assistant" for r in alone for e in r["events"]) >= 3  # each row's instruction answered
    assert batched == alone


def test_evaluate_plot_needs_free_running(capsys):
    from videollm_mod import cli

    assert cli.main(["evaluate", "--dataset", "d", "--video-root", ".", "--plot", "p"]) == 2
    assert "--plot draws the free-running streams: give --free-running too" in capsys.readouterr().err


def test_evaluate_plot_that_is_a_file_is_named_in_one_line(tmp_path, capsys):
    from videollm_mod import cli

    plot = tmp_path / "timelines"
    plot.write_text("")
    args = ["evaluate", "--dataset", "d", "--video-root", str(tmp_path), "--free-running", "--plot", str(plot)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--plot {plot}: not a folder" in err, err


def test_questions_are_user_messages_after_the_instruction_answered_at_their_time():
    from videollm_mod.recipes.free_running import answers_to, questions_of, right_answers

    conversation = [
        {"role": "user", "content": "Narrate.", "time": 1.0},
        {"role": "assistant", "content": "A red circle appears.", "time": 1.0},  # the instruction's: not a question
        {"role": "assistant", "content": "The red circle moves up.", "time": 2.5},
        {"role": "user", "content": "How many shapes do you see?", "time": 3.0},
        {"role": "assistant", "content": "One.", "time": 3.0},
        {"role": "user", "content": "Hello?", "time": 4.0},  # not answered at its time
        {"role": "assistant", "content": "The red circle disappears.", "time": 4.5},
    ]
    questions = questions_of(conversation)
    assert questions == [(3.0, "How many shapes do you see?", "One.")]
    events = [
        StreamEvent(1.0, "user", "Narrate."),
        StreamEvent(3.0, "user", "How many shapes do you see?"),
        StreamEvent(3.0, "assistant", "Two."),
    ]
    queries = [(3.0, "How many shapes do you see?")]
    assert answers_to(events, queries) == ["Two."] and right_answers(events, questions) == [False]
    assert right_answers([*events[:2], StreamEvent(3.0, "assistant", "one")], questions) == [True]
    assert answers_to(events[:2], queries) == [None]


def test_a_question_asked_twice_gets_each_of_its_answers():
    from videollm_mod.recipes.free_running import answers_to

    events = [
        StreamEvent(2.0, "user", "What colour?"),
        StreamEvent(2.0, "assistant", "Red."),
        StreamEvent(2.5, "assistant", "C sees a blue square appear."),
        StreamEvent(3.0, "user", "What colour?"),
        StreamEvent(3.0, "assistant", "Blue."),
        StreamEvent(3.0, "user", "What colour?"),
        StreamEvent(3.0, "assistant", "Green."),
    ]
    queries = [(3.0, "What colour?"), (2.0, "What colour?"), (3.0, "What colour?"), (4.0, "What colour?")]
    assert answers_to(events, queries) == ["Blue.", "Red.", "Green.", None]


def test_answers_are_counted_by_question_for_the_model_and_the_blind_one():
    from videollm_mod.recipes.free_running import score_predictions

    def record(model_answers, blind_answers):
        questions = [(2.0, "How many shapes do you see?", "One."), (4.0, "What colour is the circle?", "Red.")]

        def events(answers):
            return [
                e
                for (t, q, _), a in zip(questions, answers, strict=True)
                for e in ((t, "user", q), (t, "assistant", a))
            ]

        return {"times": [0.5 * i for i in range(10)], "references": [], "questions": questions,
                "events": events(model_answers), "blind_events": events(blind_answers)}  # fmt: skip

    records = [record(["One.", "Red."], ["Two.", "Red."]), record(["One.", "Blue."], ["Two.", "Green."])]
    results = score_predictions(records, baselines=True)
    assert results["model"]["answers_by_question"] == {
        "How many shapes do you see?": {"right": 2, "asked": 2},
        "What colour is the circle?": {"right": 1, "asked": 2},
    }
    assert results["blind"]["answers_by_question"] == {
        "How many shapes do you see?": {"right": 0, "asked": 2},
        "What colour is the circle?": {"right": 1, "asked": 2},
    }
    assert (results["model"]["questions"], results["model"]["answer_accuracy"]) == (4, 0.75)
    assert results["blind"]["answer_accuracy"] == 0.25
    assert (results["model"]["answers_right"], results["blind"]["answers_right"]) == (3, 1)
    assert results["model"]["answer_interval"] == pytest.approx((0.3006, 0.9544), abs=1e-4)  # Wilson, 3 of 4
    assert "answers_by_question" not in score_predictions([{**records[0], "questions": [], "events": []}])["model"]
