"""The package as users install it: a wheel built from this checkout, installed into a fresh virtual environment and
run from another folder. The environment borrows this one's dependencies (a `.pth` line to its site-packages, which
does not activate this checkout's editable install), so nothing is downloaded."""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds the wheel and a fresh virtual environment

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (setuptools writes `build/` into the tree it builds)."""
    out = tmp_path_factory.mktemp("wheel")
    ignore = shutil.ignore_patterns(".git", ".venv*", "runs", "build", "*.egg-info", "__pycache__", ".*_cache")
    source = shutil.copytree(REPOSITORY, out / "source", symlinks=True, ignore=ignore)
    pip = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        str(source),
    ]
    build = subprocess.run(pip, check=True, cwd=out, capture_output=True, text=True)
    (out / "build.log").write_text(build.stdout + build.stderr)
    return next(out.glob("videollm_mod-*.whl"))


def test_wheel_builds_without_warnings(wheel):
    """setuptools warned "Package would be ignored" for the demo, configs and accelerate folders (package data)."""
    log = (wheel.parent / "build.log").read_text()
    assert "warning" not in log.lower(), log


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (dependencies borrowed, see the module docstring)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    (purelib / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(pip, check=True)
    return root


def run(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "hf_home")}
    return subprocess.run(
        [str(venv / "bin" / "videollm-mod"), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_wheel_installs_two_import_names_and_no_generic_ones(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"modeling_videollm_mod", "videollm_mod"}
    for required in ("videollm_mod/conversion/model_card.md", "videollm_mod/demo/model.safetensors",
                     "videollm_mod/recipes/configs/tiny_full.yaml", "videollm_mod/data_scripts/synthetic.py"):  # fmt: skip
        assert required in names


def test_installed_package_is_the_wheels_not_this_checkout(venv, tmp_path):
    code = "import modeling_videollm_mod, videollm_mod; print(modeling_videollm_mod.__file__, videollm_mod.__file__)"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""}, check=True)  # fmt: skip
    assert all(path.startswith(str(venv)) for path in out.stdout.split()), out.stdout


def test_installed_wheel_narrates_the_demo(venv, tmp_path):
    result = run(venv, tmp_path, "narrate", "--demo", "--no-progress", "--json", "out.json")
    assert result.returncode == 0, result.stderr
    assert "frames at 2 fps" in result.stdout and (tmp_path / "out.json").is_file()


def test_installed_wheel_converts_and_releases(venv, tmp_path):
    example = run(venv, tmp_path, "convert", "--write-example", "original")
    assert example.returncode == 0 and "Warning" not in example.stderr, example.stderr
    result = run(venv, tmp_path, "convert", "--adapter", "original/adapter", "--base", "original/base", "--vision",
                 "original/vision", "--output", "converted")  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = run(venv, tmp_path, "release", "converted", "--repo-id", "me/tiny", "--no-push", "--license", "other")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "converted-release" / "README.md").is_file()
