"""`videollm-mod`: every sub-command exits 0 on success, 1 on a user error reported as one line naming what is wrong
(no traceback), 2 on a usage error; the quickstart of the README runs end to end through the command line."""

import importlib.metadata
import json
import subprocess
import sys
import warnings

import pytest
from cli_helpers import assert_user_error, run

from videollm_mod import DEMO_MODEL, cli
from videollm_mod.data_scripts._hub import load_prepared_dataset
from videollm_mod.errors import UserError


def test_help_lists_the_commands_and_the_data_scripts(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0 and all(name in out for name in cli.COMMANDS)
    status, out, _ = run(capsys, "data", "--help")
    assert status == 0
    assert all(name in out for name in ("synthetic", "prepare_ego4d_narration", "prepare_coin", "precompute_features"))


@pytest.mark.parametrize("argv", [["nope"], ["data", "nope"], ["data"], ["narrate"], ["narrate", "--fps", "two"]])
def test_usage_errors_exit_2(capsys, argv):
    assert run(capsys, *argv)[0] == 2


# What a core install (`pip install videollm-mod`, no extras) lacks of each extra: torch brings jinja2, transformers
# pyyaml.
NOT_IN_CORE = {"trl", "peft", "accelerate", "datasets", "matplotlib", "gradio"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--help"], 'videollm-mod train: needs trl, peft, accelerate, datasets (not installed): pip install '
         '"videollm-mod[train]"'),
        (["warmup", "--help"], 'videollm-mod warmup: needs trl, peft, accelerate, datasets (not installed): pip '
         'install "videollm-mod[train]"'),
        (["convert", "--write-example", "x"], 'videollm-mod convert: needs peft (not installed): pip install '
         '"videollm-mod[convert]"'),
        (["evaluate", "--dataset", "x"], 'videollm-mod evaluate: needs datasets (not installed): pip install '
         '"videollm-mod[data]"'),
        (["data", "prepare_coin", "--coin-json", "x"], 'videollm-mod data prepare_coin: needs datasets (not '
         'installed): pip install "videollm-mod[data]"'),
    ],
    ids=["train", "warmup", "convert", "evaluate", "data"],
)  # fmt: skip
def test_a_command_without_its_extra_names_the_extra_in_one_line(capsys, monkeypatch, argv, message):
    real_version = importlib.metadata.version

    def version(name):
        if name in NOT_IN_CORE:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert run(capsys, *argv) == (1, "", message + "\n")


def test_the_extras_of_this_environment_are_installed():
    assert [cli.missing_requirements(extra) for extra in ("data", "train", "convert")] == [[], [], []]


def test_reading_a_prepared_dataset_without_datasets_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(
        UserError, match=r'^reading a prepared dataset needs datasets: pip install "videollm-mod\[data\]"$'
    ):
        load_prepared_dataset(str(tmp_path))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["narrate", "--help"],
        ["narrate", "nope.mp4"],
        ["narrate", "--demo", "--json", "nope/out.json"],
        ["narrate", "--demo", "--threshold", "2"],
        ["demo", "--help"],
        ["data", "--help"],
        ["data", "synthetic", "--help"],
        ["data", "prepare_ego4d_narration", "--help"],
    ],
)
def test_help_and_argument_errors_come_before_torch_is_imported(argv, tmp_path):
    """Importing torch and transformers takes seconds (the model's package: ~4 s on an idle machine)."""
    code = (
        "import sys; from videollm_mod.cli import main; status = main(sys.argv[1:]); "
        "print('status', status, 'imported', *sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.splitlines()[-1] == f"status {1 if argv[-1] != '--help' else 0} imported", result.stderr


def test_what_narrate_reads_before_importing_the_model_package_is_the_packages_own(monkeypatch):
    import modeling_videollm_mod
    from videollm_mod.remote_code import remote_constant, remote_stdlib_module

    for name in ("session_videollm_mod", "live_videollm_mod"):  # as before the package is imported
        monkeypatch.delitem(sys.modules, f"modeling_videollm_mod.{name}")
    monkeypatch.delitem(sys.modules, "videollm_mod._remote_live_videollm_mod", raising=False)
    assert remote_constant("session_videollm_mod", "DEFAULT_THRESHOLD") == modeling_videollm_mod.DEFAULT_THRESHOLD
    live = remote_stdlib_module("live_videollm_mod")
    assert live is not modeling_videollm_mod.live_videollm_mod  # run from its file
    sources = ["-", "rtsp://camera/stream", "/dev/video0", "clip.mp4", "file://clip.mp4"]
    assert [live.is_live_source(s) for s in sources] == [modeling_videollm_mod.is_live_source(s) for s in sources]
    assert [live.is_live_source(s) for s in sources] == [True, True, True, False, False]


def test_a_misspelt_key_of_the_training_yaml_names_the_file_and_the_nearest_key(capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("learnin_rate: 0.001\nmax_steps: 1\n")
    status, _, err = run(capsys, "train", config)
    assert (status, err) == (1, f"videollm-mod train: {config}: unknown key 'learnin_rate' (did you mean "
                                "'learning_rate'?)\n")  # fmt: skip


def test_an_unknown_option_of_train_is_a_usage_error(capsys, tmp_path):
    status, _, err = run(capsys, "train", "--learnin_rate", "0.001")
    assert (
        status == 2
        and err.splitlines()[-1] == "videollm-mod train: error: unrecognized arguments: --learnin_rate 0.001"
    )


def test_a_librarys_info_log_is_not_shown_a_warning_is(tmp_path):
    """matplotlib logs its font search at INFO: a command shows warnings and errors only."""
    code = (
        "import logging; from videollm_mod.cli import run\n"
        "def main(argv):\n"
        "    logging.getLogger('matplotlib.font_manager').info('generated new fontManager')\n"
        "    logging.getLogger('videollm_mod.data_scripts').warning('skipped a video')\n"
        "run('videollm-mod x', main, [])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.stderr == "WARNING videollm_mod.data_scripts: skipped a video\n"


def test_train_help_lists_the_config_option(capsys):
    status, out, _ = run(capsys, "train", "--help")
    assert status == 0 and "--config" in out and "--dataset_name" in out


@pytest.mark.slow
def test_train_evaluate_release_on_the_quickstart_data(quickstart, capsys, tmp_path):
    """train (from the demo, by default) -> evaluate -> release --no-push, each exit status 0."""
    video_root = quickstart / "synthetic/ego4d/v2/full_scale"
    status, out, err = run(
        capsys, "train", "--dataset_name", quickstart / "narration", "--dataset_config", "raw", "--video_root",
        video_root, "--output_dir", tmp_path / "model", "--max_steps", 1, "--per_device_train_batch_size", 1,
        "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--save_strategy", "no",
    )  # fmt: skip
    assert status == 0, err
    assert "saved the fine-tuned model" in out
    status, out, err = run(
        capsys, "evaluate", "--model", tmp_path / "model", "--dataset", quickstart / "narration", "--config", "raw",
        "--split", "train", "--video-root", video_root, "--max-samples", 1, "--output", tmp_path / "metrics.json",
    )  # fmt: skip
    assert status == 0, err
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["model_path"] == str(tmp_path / "model") and set(report["results"]) == {"model", "speak_rate"}
    status, out, err = run(capsys, "release", tmp_path / "model", "--repo-id", "me/tiny", "--no-push")
    assert status == 0, err


def test_train_accepts_a_yaml_file_as_its_first_argument(quickstart, capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"dataset_name: {quickstart / 'nope'}\n")
    status, _, err = run(capsys, "train", config)
    assert_user_error(status, err, "dataset_name", quickstart / "nope", "no such dataset folder")


def test_convert_the_example_then_release_it(capsys, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(capsys, "convert", "--write-example", tmp_path / "original")[0] == 0
    assert [str(warning.message) for warning in caught] == []  # peft's and transformers' were shown to users
    original = tmp_path / "original"
    status, _, err = run(capsys, "convert", "--adapter", original / "adapter", "--base", original / "base", "--vision",
                         original / "vision", "--output", tmp_path / "converted")  # fmt: skip
    assert status == 0, err
    status, _, err = run(capsys, "release", tmp_path / "converted", "--repo-id", "me/x", "--no-push")
    assert_user_error(status, err, "license", "--license")  # local sources: nothing states a licence
    status, _, err = run(
        capsys, "release", tmp_path / "converted", "--repo-id", "me/x", "--no-push", "--license", "other"
    )
    assert status == 0, err


def test_data_scripts_and_precompute_run_on_the_quickstart_data(quickstart, capsys, caplog, tmp_path):
    coin = quickstart / "synthetic/coin"
    status, out, err = run(capsys, "data", "precompute_features", "--model", DEMO_MODEL, "--video-root",
                           coin / "videos", "--output-dir", tmp_path / "features", "--dtype", "float32")  # fmt: skip
    assert status == 0, err
    summaries = out.splitlines() + [record.getMessage() for record in caplog.records]
    assert [line.split(" (")[0] for line in summaries if "encoded" in line] == ["encoded 2 videos"]  # said once
    status, _, err = run(capsys, "data", "prepare_coin", "--coin-json", coin / "coin.json", "--features-dir",
                         tmp_path / "features", "--output-dir", tmp_path / "coin", "--benchmarks", "step")  # fmt: skip
    assert (status, err) == (0, "")  # no progress bar of datasets for each parquet file
    assert load_prepared_dataset(str(tmp_path / "coin"), "step")["train"].num_rows > 0
    assert capsys.readouterr().err == ""  # nor for re-reading them


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["narrate", "{tmp}/nope.mp4"], ["{tmp}/nope.mp4", "not found"]),
        (["narrate", "--demo", "--model", "{tmp}/nope"], ["{tmp}/nope", "no such model folder"]),
        (["evaluate", "--dataset", "{tmp}/nope", "--video-root", "{tmp}"], ["--dataset", "{tmp}/nope"]),
        (["train", "--config", "{tmp}/nope.yaml"], ["--config", "{tmp}/nope.yaml"]),
        (
            ["convert", "--adapter", "{tmp}/a", "--base", "{tmp}/b", "--vision", "{tmp}/c", "--output", "{tmp}/o"],
            ["--adapter", "{tmp}/a", "neither a local folder nor reachable on the Hub"],
        ),  # fmt: skip
        (["release", "{tmp}/nope", "--repo-id", "me/x", "--no-push"], ["{tmp}/nope", "no such model folder"]),
        (
            [
                "data",
                "prepare_coin",
                "--coin-json",
                "{tmp}/coin.json",
                "--video-root",
                "{tmp}",
                "--output-dir",
                "{tmp}/o",
            ],
            ["{tmp}/coin.json", "annotation file not found"],
        ),  # fmt: skip
        (["data", "synthetic", "--output-dir", "{tmp}"], ["{tmp}", "exists", "--overwrite"]),
        (
            ["data", "precompute_features", "--model", "{tmp}/m", "--video-root", "{tmp}", "--output-dir", "{tmp}/o"],
            ["{tmp}/m", "no such model folder"],
        ),  # fmt: skip
    ],
    ids=["narrate", "narrate-model", "evaluate", "train", "convert", "release", "data", "synthetic", "precompute"],
)
def test_user_errors_are_one_line_naming_the_input(capsys, tmp_path, argv, names):
    status, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert_user_error(status, err, *[name.format(tmp=tmp_path) for name in names])


def test_debug_shows_the_traceback(capsys, tmp_path):
    with pytest.raises(UserError, match="not found"):
        cli.main(["--debug", "narrate", str(tmp_path / "nope.mp4")])


def test_interrupt_exits_130_without_a_traceback(capsys, monkeypatch):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert cli.run("videollm-mod narrate", interrupted, []) == 130
    assert capsys.readouterr().err == "videollm-mod narrate: interrupted\n"


def test_evaluate_runs_in_the_dtype_asked_and_says_so(quickstart, capsys, tmp_path):
    """`--dtype bfloat16`: the model is evaluated in bfloat16 (on the GPU it is how an 8B model fits), and the
    teacher-forced perplexity stays within 5 % of float32's."""
    video_root = quickstart / "synthetic/ego4d/v2/full_scale"
    reports = {}
    for dtype in ("float32", "bfloat16"):
        output = tmp_path / f"{dtype}.json"
        status, _, err = run(capsys, "evaluate", "--dataset", quickstart / "narration", "--config", "raw", "--split",
                             "train", "--video-root", video_root, "--max-samples", 2, "--device", "cpu", "--dtype",
                             dtype, "--output", output)  # fmt: skip
        assert status == 0, err
        reports[dtype] = json.loads(output.read_text())
    assert [(r["device"], r["dtype"]) for r in reports.values()] == [("cpu", "float32"), ("cpu", "bfloat16")]
    full, half = (reports[d]["results"]["model"]["lm_ppl"] for d in ("float32", "bfloat16"))
    assert abs(half - full) / full < 0.05, (full, half)
