"""The shipped demo model: size, remote-code loading, paper MoD settings, streaming narration of a held-out video,
and counterfactuals that a model which does not look at the frames fails (black video, empty scene, swapped colours,
shifted events; `recipes.counterfactuals`)."""

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

import modeling_videollm_mod  # noqa: F401  registers the classes: the demo is data, loaded with this package's code
import videollm_mod
from videollm_mod import DEMO_MODEL
from videollm_mod.recipes import counterfactuals as cf

DEMO = str(DEMO_MODEL)


@pytest.fixture(scope="module")
def demo():
    model = AutoModelForCausalLM.from_pretrained(DEMO, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(DEMO, trust_remote_code=True)


def test_demo_weights_fit_in_the_package():
    assert os.path.getsize(os.path.join(DEMO, "model.safetensors")) <= 20 * 2**20


def test_demo_ships_as_data_and_saves_with_its_code(demo, tmp_path):
    assert not list(DEMO_MODEL.glob("*.py"))
    model, processor = demo
    model.save_pretrained(tmp_path / "demo")
    processor.save_pretrained(tmp_path / "demo")
    # a fresh process that has not imported the package, so the classes come from the code written next to the weights
    code = (
        "from transformers import AutoModelForCausalLM, AutoProcessor;"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'demo')!r}, trust_remote_code=True);"
        f"p = AutoProcessor.from_pretrained({str(tmp_path / 'demo')!r}, trust_remote_code=True);"
        "print(type(m).__module__, type(p).__module__)"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env=env)  # fmt: skip
    model_module, processor_module = out.stdout.split()[-2:]
    assert model_module.startswith("transformers_modules.") and processor_module.startswith("transformers_modules.")


def test_demo_path_is_the_demo_with_the_remote_code_written_as_a_release_writes_it(tmp_path):
    from videollm_mod.conversion.checkpoint_io import remote_code_files

    folder = videollm_mod.demo_path(tmp_path)
    assert videollm_mod.demo_path(tmp_path) == folder and [p.name for p in tmp_path.iterdir()] == [folder.name]
    code = {p.name: p.read_bytes() for p in remote_code_files()}
    data = {p.name: p.read_bytes() for p in DEMO_MODEL.iterdir()}
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {**data, **code}


def test_demo_path_loads_in_a_fresh_process_where_the_package_cannot_be_imported(tmp_path):
    from videollm_mod.conversion.release import verify_release

    loaded = verify_release(videollm_mod.demo_path(tmp_path))
    assert loaded == {"class": "VideoLLMMoDForCausalLM", "processor": "VideoLLMMoDProcessor"}


def readme_python_example() -> str:
    """The code block of the README's section "Load and run from Python", as written."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("\n## Load and run from Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.parametrize("clip", ["black", "events"])
def test_readme_python_example_runs_on_the_demo_and_says_nothing_before_the_first_event(clip, tmp_path):
    """The README's example in a fresh process (an empty HF_HOME, offline), on a clip of ours instead of video.mp4:
    nothing on a black clip; on a clip whose first event comes at 2.22 s, the first reply at the first frame after it
    (2.5 s on the 2 fps grid), and none before."""
    code = readme_python_example()
    assert '"video.mp4"' in code
    if clip == "black":
        video = cf.render_black(str(tmp_path / "black.mp4"), 6)
    else:
        events = cf.random_events(4242, 12)
        assert events[0].start == pytest.approx(2.22, abs=0.01)
        video = cf.render(str(tmp_path / "events.mp4"), events, 12, 4242)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_MODULES_CACHE", None)
    result = subprocess.run([sys.executable, "-c", code.replace('"video.mp4"', repr(video))], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    if clip == "black":
        assert lines == []
        return
    pattern = r"\[ *(\d+\.\d\d)s\] assistant: C sees (a|the) \w+ \w+ .+\."
    assert lines and all(re.fullmatch(pattern, line) for line in lines), lines
    assert float(re.fullmatch(pattern, lines[0]).group(1)) == 2.5


def test_demo_is_the_studys_best_mod_variant(demo):
    """The study's `mod_even` (the paper's r = 0.2 and learned routers, on the even layers) with a Qwen3 decoder, as
    `train_demo` makes it."""
    from videollm_mod.recipes.train_demo import DEMO_SETTINGS, VARIANT

    config = demo[0].config
    assert (config.mod_layers, config.mod_keep_ratio, config.frame_num_tokens, config.mod_selection) == (
        [0, 2],
        0.2,
        37,
        "router",
    )
    assert VARIANT == "mod_even" and config.text_config.model_type == DEMO_SETTINGS["lm_family"] == "qwen3"


def test_demo_metrics_beat_the_baselines_on_its_validation_streams():
    quality = json.load(open(os.path.join(DEMO, "demo_metrics.json")))["validation"]
    teacher_forced, free, chat = quality["teacher_forced"], quality["free_running"], quality["livechat"]
    baselines = ("never_speak", "random_same_rate", "periodic_same_rate", "blind")
    assert teacher_forced["model"]["time_diff"] < min(teacher_forced[b]["time_diff"] for b in baselines)
    assert free["model"]["f1"] > max(free[b]["f1"] for b in baselines)
    assert chat["model"]["answer_accuracy"] > chat["blind"]["answer_accuracy"] + 0.3


def test_demo_narrates_a_held_out_synthetic_video(demo, tmp_path):
    from videollm_mod.data_scripts import synthetic

    paths = synthetic.generate_dataset(
        str(tmp_path / "syn"), num_videos=1, seconds=8, fps=4.0, resolution=32, seed=777, num_coin_videos=0
    )
    video = glob.glob(os.path.join(paths["ego4d_videos"], "*.mp4"))[0]
    model, processor = demo
    torch.manual_seed(0)
    events = [e for e in model.stream_generate(video, processor, max_new_tokens=16) if e.role == "assistant"]
    assert events, "the demo says nothing over 8 seconds with an event every ~2 seconds"
    pattern = r"C sees (a|the) (red|green|blue|yellow) (circle|square|triangle) (appear|disappear|move \w+|turn \w+)\."
    assert all(re.fullmatch(pattern, e.text) for e in events), [e.text for e in events]


def test_narrate_demo_main_job_writes_events_on_the_frame_grid_beside_the_videos_true_events(tmp_path, capsys):
    """The README's main job: `videollm-mod narrate --demo` renders a held-out video and narrates it, printing the
    video's true events (`Truth`) among the replies in time order, and writing both to `--json`."""
    from videollm_mod import cli

    out = tmp_path / "conversation.json"
    assert cli.main(["narrate", "--demo", "--no-progress", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written) == {"seed", "conversation", "ground_truth"} and written["seed"] == 2024
    events, truth = written["conversation"], written["ground_truth"]
    assert events and {e["role"] for e in events} == {"assistant"}
    times = [e["time"] for e in events]
    assert times == sorted(times) and all(0 <= t < 20 and (t * 2).is_integer() for t in times)
    assert not list(tmp_path.glob("*.tmp-*")), "the JSON is written to a temporary name and renamed"
    # seed 2024's video: a green circle appears at 0.93 s first, six events in all
    assert len(truth) == 6 and truth[0] == {"time": 0.93, "text": "C sees a green circle appear."}
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "cache budget per video: 1552 tokens (the stream length the model was trained on)"
    assert lines[-1].startswith(f"40 frames at 2 fps (19.5 s), {len(events)} replies, 6 events in the video")
    said = [(float(t), role, text) for t, role, text in (re.fullmatch(r"\[ *([\d.]+)s\] (\w+): (.*)", x).groups()
                                                         for x in lines if x.startswith("["))]  # fmt: skip
    expected = [(e["time"], "Truth", e["text"]) for e in truth] + [(e["time"], "Assistant", e["text"]) for e in events]
    assert said == sorted(expected, key=lambda x: (x[0], x[1] != "Truth"))  # a true event before a reply at its time


def test_demo_ground_truth_is_the_rendered_videos_events_as_the_demo_learned_to_say_them(tmp_path):
    from videollm_mod.data_scripts.synthetic import Event
    from videollm_mod.narrate import demo_ground_truth, render_demo_videos

    [video] = render_demo_videos(str(tmp_path), seed=7, seconds=8)
    records = json.loads((tmp_path / "synthetic" / "synthetic_events.json").read_text())[Path(video).stem]
    events = sorted((Event.from_dict(r) for r in records), key=lambda e: e.narration_time)
    assert len(events) >= 2
    truth = demo_ground_truth(str(tmp_path), video)
    assert [t["time"] for t in truth] == [round(e.narration_time, 2) for e in events]
    # the text is the event's narration cleaned as in training: "#C C sees the red circle move left" -> "C sees ... ."
    assert [t["text"] for t in truth] == [e.narration.removeprefix("#C ") + "." for e in events]


def test_narrate_needs_a_video_or_demo(capsys):
    from videollm_mod import cli

    assert cli.main(["narrate"]) == 2
    assert "give a VIDEO file or --demo" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# counterfactuals: the same world with one thing changed (videos of their own seeds, narrated without a query)

SEEDS = range(5000, 5004)
# The target for swapped colours: the demo names 33 of 33 right on these seeds (86 of 86 on the benchmark's
# 10 seeds), and none with the original colours.
SWAPPED_RIGHT = 0.9


@pytest.fixture(scope="module")
def originals(demo, tmp_path_factory):
    """`{seed: (events, replies)}` of the unchanged videos."""
    folder = tmp_path_factory.mktemp("originals")
    out = {}
    for seed in SEEDS:
        events = cf.random_events(seed, 20)
        out[seed] = events, cf.replies(*demo, cf.render(str(folder / f"{seed}.mp4"), events, 20, seed))
    return out


def test_demo_narrates_a_video_given_with_no_instruction_in_the_narration_streams_voice(originals):
    """With no query (as `narrate` runs a video) every reply reads as the narration streams' ("C sees a red circle
    appear."), none as the live chats' ("A red circle appears."): the voice `benchmarks/narration_voice.py` counts."""
    said = [text for _, replies in originals.values() for _, text in replies]
    assert len(said) >= 3 * len(SEEDS) and all(text.startswith("C sees ") for text in said)


def test_demo_says_nothing_about_a_black_video(demo, tmp_path):
    assert cf.replies(*demo, cf.render_black(str(tmp_path / "black.mp4"), 20)) == []  # the target: <= 1


def test_demo_says_nothing_over_its_worlds_background_with_nothing_on_it(demo, tmp_path):
    """An empty scene (the drifting background of each seed's video, no shape): nothing happens, and the demo, trained
    on such quiet streams, says nothing (a demo trained without them said 1 to 4 things in 20 s)."""
    said = {seed: cf.replies(*demo, cf.render(str(tmp_path / f"{seed}.mp4"), [], 20, seed)) for seed in SEEDS}
    assert said == {seed: [] for seed in SEEDS}


def test_demo_stays_silent_on_a_black_video_four_times_its_trained_length_by_default(demo, tmp_path):
    """With the default budget (the demo's trained stream length, from its config) a long black video gets no reply;
    with the model's whole context as the budget (the old default) an earlier demo babbled after about 33 s."""
    model, processor = demo
    trained = model.config.trained_stream_length
    seconds = 4 * trained / (processor.frame_num_tokens + 1) / 2  # a frame's tokens and its interval, at 2 fps
    video = cf.render_black(str(tmp_path / "black.mp4"), seconds)
    session = model.stream_session(processor)
    assert session.limits[0] == trained
    assert "trained on" in session.describe_budget()
    assert [e for e in model.stream_generate(video, processor) if e.role == "assistant"] == []


def test_demo_names_the_colours_of_a_colour_swapped_video(demo, tmp_path):
    """Replies near an event name the swapped colours (issue target 0.9 right; the demo names all right here, see
    `SWAPPED_RIGHT`), and far more often than the original colours, which a model that does not look would name
    as often as the swapped ones."""
    swapped_right = original_right = counted = 0
    for seed in SEEDS:
        original = cf.random_events(seed, 20)
        swapped = cf.swap_colors(original)
        said = cf.replies(*demo, cf.render(str(tmp_path / f"{seed}.mp4"), swapped, 20, seed))
        r, c = cf.colors_right(said, swapped)
        swapped_right, counted = swapped_right + r, counted + c
        original_right += cf.colors_right(said, original)[0]
    assert counted >= 3 * len(SEEDS)
    assert swapped_right / counted >= SWAPPED_RIGHT and swapped_right >= 3 * original_right


def test_demo_replies_move_with_events_shifted_3_seconds_later(demo, originals, tmp_path):
    """The same events 3 s later: the replies that come again (same text) come 3 s later (median error <= 0.5 s, the
    issue's target). Every reply comes again word for word here (33 of 33; 78 of 87 on the benchmark's 10 seeds): the
    demo's wording of an event can depend on what it said before, so the test asks for 90 %, not all."""
    errors, total = [], 0
    for seed, (events, said) in originals.items():
        shifted = cf.replies(*demo, cf.render(str(tmp_path / f"{seed}.mp4"), cf.shift_events(events, 3.0), 23, seed))
        errors += cf.shift_errors(said, shifted, 3.0)
        total += len(said)
    assert len(errors) >= 0.9 * total and cf.summary(errors) <= 0.5


def test_demo_answers_colour_questions_with_the_colours_on_screen_swapped_or_not(demo, tmp_path):
    """ "What colour is the circle?" asked mid-stream about a shape on screen (`cf.colour_questions`): the answer names
    its colour, in the swapped video the swapped one. The demo answers 38 of these 42 right (19 and 19 of 21; the 4
    misses are one triangle of seed 5002 asked about twice while a circle shares the screen, answered with the
    circle's colours in both videos: the binding of colour to shape with two shapes on screen, its known weakness); a
    model that did not look would name the original colours of the swapped videos as often as the swapped ones. Its
    recipe puts such questions into half of the narration streams (`question_share`): without them an earlier recipe
    answered 34, the rest narration sentences ("C sees the red circle turn yellow."); the previous demo 40, the one
    before it 38. The issue's target of 0.8 is for the held-out live chats (0.840 on 120)."""
    right = asked = swapped_right = unswapped_named = 0
    for seed in SEEDS:
        original = cf.random_events(seed, 20)
        for name, events in (("original", original), ("swapped", cf.swap_colors(original))):
            questions = cf.colour_questions(events)
            said = cf.answers(*demo, cf.render(str(tmp_path / f"{seed}-{name}.mp4"), events, 20, seed), questions)
            assert len(said) == len(questions)
            for (_, _, colour), answer in zip(questions, said, strict=True):
                named = cf.colors_named(answer)
                right, asked = right + (named == [colour]), asked + 1
                if name == "swapped":
                    swapped_right += named == [colour]
                    unswapped_named += cf.SWAPPED[colour] in named
    assert asked >= 8 * len(SEEDS)
    assert right / asked >= 0.9 and swapped_right >= 0.85 * asked / 2 and unswapped_named * 3 <= swapped_right


def test_demo_card_states_the_validation_figures_of_its_metrics_file():
    from huggingface_hub import ModelCard

    from videollm_mod.recipes.train_demo import demo_eval_results

    card = ModelCard.load(os.path.join(DEMO, "README.md"))
    metrics = json.load(open(os.path.join(DEMO, "demo_metrics.json")))
    stated = {(r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert stated == {(r.metric_type, r.metric_value) for r in demo_eval_results(metrics)}
    assert ("free-running event F1", round(metrics["validation"]["free_running"]["model"]["f1"], 3)) in stated
