"""`videollm-mod`: every sub-command exits 0 on success, 1 on a user error reported as one line naming what is wrong
(no traceback), 2 on a usage error; the quickstart of the README runs end to end through the command line."""

import json

import pytest

from videollm_mod import DEMO_MODEL, cli
from videollm_mod.data_scripts._hub import load_prepared_dataset


def run(capsys, *argv):
    """Exit status, stdout and stderr of `videollm-mod ARGV`."""
    capsys.readouterr()
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_user_error(status, err, *names):
    """Exit status 1 and one line on stderr that names every one of `names`."""
    assert status == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(str(name) in err for name in names), err


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The README's data steps at a small size: synthetic streams, then the narration dataset."""
    root = tmp_path_factory.mktemp("quickstart")
    synthetic = root / "synthetic"
    argv = ["data", "synthetic", "--output-dir", synthetic, "--num-videos", 6, "--num-coin-videos", 2, "--seconds", 6,
            "--resolution", 32, "--fps", 4]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    argv = ["data", "prepare_ego4d_narration", "--annotation-dir", synthetic / "ego4d/v2/annotations",
            "--video-root", synthetic / "ego4d/v2/full_scale", "--output-dir", root / "narration"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    return root


def test_help_lists_the_commands_and_the_data_scripts(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0 and all(name in out for name in cli.COMMANDS)
    status, out, _ = run(capsys, "data", "--help")
    assert status == 0
    assert all(name in out for name in ("synthetic", "prepare_ego4d_narration", "prepare_coin", "precompute_features"))


@pytest.mark.parametrize("argv", [["nope"], ["data", "nope"], ["data"], ["narrate", "--threshold", "2", "--demo"]])
def test_usage_errors_exit_2(capsys, argv):
    assert run(capsys, *argv)[0] == 2


def test_train_help_lists_the_config_option(capsys):
    status, out, _ = run(capsys, "train", "--help")
    assert status == 0 and "--config" in out and "--dataset_name" in out


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
    assert run(capsys, "convert", "--write-example", tmp_path / "original")[0] == 0
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


def test_data_scripts_and_precompute_run_on_the_quickstart_data(quickstart, capsys, tmp_path):
    coin = quickstart / "synthetic/coin"
    status, _, err = run(capsys, "data", "precompute_features", "--model", DEMO_MODEL, "--video-root", coin / "videos",
                         "--output-dir", tmp_path / "features", "--dtype", "float32")  # fmt: skip
    assert status == 0, err
    status, _, err = run(capsys, "data", "prepare_coin", "--coin-json", coin / "coin.json", "--features-dir",
                         tmp_path / "features", "--output-dir", tmp_path / "coin", "--benchmarks", "step")  # fmt: skip
    assert status == 0, err
    assert load_prepared_dataset(str(tmp_path / "coin"), "step")["train"].num_rows > 0


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["narrate", "{tmp}/nope.mp4"], ["{tmp}/nope.mp4", "not found"]),
        (["narrate", "--demo", "--model", "{tmp}/nope"], ["{tmp}/nope", "no such model folder"]),
        (["evaluate", "--dataset", "{tmp}/nope", "--video-root", "{tmp}"], ["--dataset", "{tmp}/nope"]),
        (["train", "--config", "{tmp}/nope.yaml"], ["--config", "{tmp}/nope.yaml"]),
        (
            ["convert", "--adapter", "{tmp}/a", "--base", "{tmp}/b", "--vision", "{tmp}/c", "--output", "{tmp}/o"],
            ["--adapter", "{tmp}/a", "no such folder"],
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
    with pytest.raises(ValueError, match="not found"):
        cli.main(["--debug", "narrate", str(tmp_path / "nope.mp4")])


def test_interrupt_exits_130_without_a_traceback(capsys, monkeypatch):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert cli.run("videollm-mod narrate", interrupted, []) == 130
    assert capsys.readouterr().err == "videollm-mod narrate: interrupted\n"
