"""Answer accuracy (`videollm-mod evaluate --answer-accuracy`): the question prompt, the frames, greedy answers, the
scores and baselines; and the Ego-Exo4D keystep pipeline end to end from the command line."""

import json

import pytest
import torch
from datasets import Dataset
from safetensors.torch import save_file

from modeling_videollm_mod.processing_videollm_mod import SYSTEM_PROMPT
from videollm_mod import cli
from videollm_mod.data_scripts._stream import message
from videollm_mod.data_scripts.prepare_coin import STEP_QUERY
from videollm_mod.data_scripts.synthetic_egoexo4d import keystep_vocabulary
from videollm_mod.errors import UserError
from videollm_mod.loading import load_model_and_processor
from videollm_mod.recipes.answer_accuracy import (
    black_frames,
    evaluate_answers,
    generate_answer,
    question_inputs,
    row_label,
    score,
)
from videollm_mod.recipes.evaluate import DEMO_ANSWER_NOTE

FEATURE_SHAPE = (37, 128)  # the demo model: 37 tokens per frame (1 + 6 x 6), vision hidden size 128


@pytest.fixture(scope="module")
def demo():
    return load_model_and_processor(None, device="cpu", dtype=torch.float32)


def step_row(video_uid: str, start: int, frames: int, answer: str) -> dict:
    conversation = [message("user", STEP_QUERY, start / 2), message("stream", "", (start + frames - 1) / 2, frames,
                    frames), message("assistant", answer, (start + frames - 1) / 2, 1)]  # fmt: skip
    return {"video_uid": video_uid, "video": f"{video_uid}.mp4", "fps": 2.0, "start_frame": start,
            "stop_frame": start + frames, "num_frames": frames, "conversation": conversation,
            "label": [answer.rstrip(".").lower()]}  # fmt: skip


@pytest.fixture
def features(tmp_path):
    """A 6-frame video's features, distinct per frame."""
    values = torch.arange(6 * FEATURE_SHAPE[0] * FEATURE_SHAPE[1], dtype=torch.float32).view(6, *FEATURE_SHAPE) / 1e4
    save_file({"features": values}, str(tmp_path / "take.safetensors"))
    return values


def test_question_is_the_conversation_without_its_answer_then_the_generation_prompt(demo):
    _, processor = demo
    inputs = question_inputs(processor, step_row("take", 2, 3, "Loosen the nuts."), {"frame_features": torch.zeros(6, *FEATURE_SHAPE)})  # fmt: skip
    tokenizer = processor.tokenizer
    frame = "<v>" * FEATURE_SHAPE[0]
    text = f"{tokenizer.bos_token}{SYSTEM_PROMPT}\n\nUser: {STEP_QUERY}\n[{frame},{frame},{frame}]\nAssistant:"
    assert inputs["input_ids"][0].tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_question_frames_are_the_rows_frame_range(demo, features):
    _, processor = demo
    inputs = question_inputs(processor, step_row("take", 2, 3, "Loosen the nuts."), {"frame_features": features})
    assert torch.equal(inputs["frame_features"], features[2:5])


def test_black_frames_keep_the_form_of_the_frames(demo, features):
    model, processor = demo
    inputs = question_inputs(processor, step_row("take", 2, 3, "Loosen the nuts."), {"frame_features": features})
    blind = black_frames(model, processor, inputs)
    assert set(blind) == {"input_ids", "frame_features"} and blind["frame_features"].shape == (3, *FEATURE_SHAPE)
    assert torch.allclose(blind["frame_features"][0], blind["frame_features"][2], atol=1e-5)  # the same black
    assert not torch.equal(blind["frame_features"], inputs["frame_features"])
    assert torch.equal(blind["input_ids"], inputs["input_ids"])


def test_generated_answer_equals_a_greedy_decoding_loop(demo, features):
    model, processor = demo
    inputs = question_inputs(processor, step_row("take", 1, 4, "Loosen the nuts."), {"frame_features": features})
    ids = inputs["input_ids"]
    with torch.no_grad():
        for _ in range(12):
            logits = model(input_ids=ids, frame_features=inputs["frame_features"], use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], 1)
            if ids[0, -1] == model.config.text_config.eos_token_id:
                break
    expected = processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert generate_answer(model, processor, inputs, max_new_tokens=12) == expected


def test_score_counts_exact_and_fuzzy_matches():
    categories = ["check the tire", "loosen the nuts", "remove the wheel"]
    predictions = ["Loosen the nuts.", "remove a wheel", "check tires", "dance"]
    labels = ["loosen the nuts", "remove the wheel", "check the tire", "remove the wheel"]
    # exact: 1 of 4; fuzzy: "remove a wheel" and "check tires" are nearest to their labels, "dance" to "check the tire"
    assert score(predictions, labels, categories) == {"exact": 0.25, "accuracy": 0.75}


def test_majority_baseline_scores_the_share_of_the_most_frequent_label(demo, tmp_path, features):
    model, processor = demo
    rows = [step_row("take", 0, 2, "Check the tire."), step_row("take", 2, 2, "Loosen the nuts."),
            step_row("take", 4, 2, "Loosen the nuts.")]  # fmt: skip
    results = evaluate_answers(model, processor, Dataset.from_list(rows), features_dir=str(tmp_path), baselines=True)
    assert results["majority"] == {"exact": pytest.approx(2 / 3), "accuracy": pytest.approx(2 / 3)}
    assert sorted(results) == ["blind", "majority", "model", "random_label"]


def test_a_row_without_one_label_is_refused():
    with pytest.raises(UserError, match=r"row 3 \(take\): answer accuracy needs a `label` column with one label"):
        row_label({"video_uid": "take", "label": ["a", "b"]}, 3)


@pytest.mark.slow
def test_egoexo4d_keystep_pipeline_runs_from_the_command_line(tmp_path):
    syn, data, model, report = (str(tmp_path / name) for name in ("syn", "data", "model", "eval.json"))
    assert cli.main(["data", "synthetic_egoexo4d", "--output-dir", syn, "--num-takes", "3", "--fps", "4",
                     "--resolution", "32", "--seed", "2"]) == 0  # fmt: skip
    assert cli.main(["data", "prepare_egoexo4d", "--egoexo-root", syn, "--video-root", syn, "--output-dir", data,
                     "--configs", "keystep"]) == 0  # fmt: skip
    assert cli.main(["train", "--dataset_name", data, "--dataset_config", "keystep", "--video_root", syn,
                     "--cache_videos", "true", "--output_dir", model, "--max_steps", "2",
                     "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--use_cpu", "true",
                     "--bf16", "false", "--report_to", "none", "--save_strategy", "no",
                     "--activation_checkpointing", "false"]) == 0  # fmt: skip
    assert cli.main(["evaluate", "--model", model, "--dataset", data, "--config", "keystep", "--split", "val",
                     "--video-root", syn, "--answer-accuracy", "--output", report]) == 0  # fmt: skip
    result = json.load(open(report))
    assert result["rows"] == len(keystep_vocabulary()["PaintCircle"])  # the val take: the third of the sorted tasks
    assert set(result["results"]["model"]) == {"exact", "accuracy"} and "note" not in result
    assert cli.main(["evaluate", "--dataset", data, "--config", "keystep", "--split", "val", "--video-root", syn,
                     "--answer-accuracy", "--max-samples", "1", "--output", report]) == 0  # fmt: skip
    assert json.load(open(report))["note"] == DEMO_ANSWER_NOTE  # the shipped demo: why it scores low
