"""`videollm-mod release`: the release folder's files and card metadata, the fresh-process reload check that guards the
push, and the exact files committed, with the Hub client mocked at the `huggingface_hub` API boundary."""

import json
import shutil
from unittest import mock

import huggingface_hub
import pytest
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import load_file, save_file
from test_conversion import original  # noqa: F401  (the tiny original-format checkpoint)

from videollm_mod import cli
from videollm_mod.conversion import convert
from videollm_mod.conversion.checkpoint_io import remote_code_files
from videollm_mod.conversion.release import ReleaseError, assemble_release, release

REPO_ID = "me/videollm-online-tiny"
DATA_FILES = [
    "README.md",
    "chat_template.jinja",
    "config.json",
    "conversion_report.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.fixture(scope="module")
def converted(original, tmp_path_factory):  # noqa: F811
    """A conversion whose language model's card states its licence, as Llama-3's does."""
    sources = tmp_path_factory.mktemp("sources")
    for name in ("adapter", "base", "vision"):
        shutil.copytree(original["root"] / name, sources / name)
    ModelCard.from_template(ModelCardData(license="llama3")).save(sources / "base" / "README.md")
    folder = tmp_path_factory.mktemp("model") / "tiny"
    convert(str(sources / "adapter"), str(sources / "base"), str(sources / "vision"), folder, dtype="float32")
    (folder / "optimizer.pt").write_bytes(b"not for release")
    (folder / "trainer_state.json").write_text("{}")
    return folder


class FakeHub:
    """Records what `HfApi` would send: patched `create_repo` and `create_commit` (xet off, YAML check skipped)."""

    def __init__(self):
        self.repos, self.commits = [], []

    def create_repo(self, api, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, api, repo_id, operations, commit_message=None, **kwargs):
        self.commits.append(
            {"repo_id": repo_id, "message": commit_message, "files": sorted(o.path_in_repo for o in operations)}
        )
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/0",
            commit_message=commit_message,
            commit_description="",
            oid="0" * 40,
        )


@pytest.fixture
def hub():
    fake = FakeHub()
    with (
        mock.patch.object(huggingface_hub.HfApi, "create_repo", autospec=True, side_effect=fake.create_repo),
        mock.patch.object(huggingface_hub.HfApi, "create_commit", autospec=True, side_effect=fake.create_commit),
        mock.patch.object(huggingface_hub.HfApi, "_validate_yaml", autospec=True),
        mock.patch("huggingface_hub.hf_api.is_xet_available", return_value=False),
    ):
        yield fake


def expected_files() -> list[str]:
    return sorted(DATA_FILES + [p.name for p in remote_code_files()])


def test_push_commits_exactly_the_release_files(converted, hub, tmp_path):
    release(converted, REPO_ID, output=tmp_path / "release", private=True, commit_message="tiny release")
    assert hub.repos == [(REPO_ID, {"private": True, "exist_ok": True, "repo_type": "model"})]
    assert len(hub.commits) == 1
    assert hub.commits[0] == {"repo_id": REPO_ID, "message": "tiny release", "files": expected_files()}


def test_release_folder_leaves_out_training_leftovers(converted, tmp_path):
    names = assemble_release(converted, tmp_path / "release", REPO_ID)
    assert names == expected_files()
    assert "optimizer.pt" not in names and "trainer_state.json" not in names


def test_card_metadata_comes_from_the_models_provenance(converted, tmp_path):
    assemble_release(converted, tmp_path / "release", REPO_ID)
    card = ModelCard.load(tmp_path / "release" / "README.md")
    assert card.data.license == "llama3"  # the language model's card
    assert card.data.base_model is None and card.data.datasets is None  # local sources, no Hub ids to name
    assert card.data.pipeline_tag == "video-text-to-text"
    assert {"videollm-mod", "custom_code", "dense"} <= set(card.data.tags)
    assert f"# {REPO_ID}" in card.text and "VideoLLM-online: Online Video Large Language Model" in card.text
    assert "Not stated by the model's provenance." in card.text and "Llama-3-8B" not in card.text
    assert str(converted.parent) not in card.text


def test_options_override_the_card_metadata(converted, tmp_path):
    overrides = {"license": "other", "metrics": ["perplexity"], "base_model": ["meta-llama/Meta-Llama-3-8B-Instruct"]}
    assemble_release(converted, tmp_path / "release", REPO_ID, overrides)
    data = ModelCard.load(tmp_path / "release" / "README.md").data
    assert (data.license, data.metrics, data.base_model) == ("other", ["perplexity"], overrides["base_model"])


def test_install_line_of_the_card_installs_what_the_remote_code_imports(converted, tmp_path):
    assemble_release(converted, tmp_path / "release", REPO_ID)
    text = (tmp_path / "release" / "README.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("pip install "))
    assert "videollm-mod" not in line  # the package is not on PyPI; the code travels with the weights
    assert all(f"'{name}" in line for name in ("transformers", "torch", "av", "pillow")), line


def test_card_without_a_licence_is_refused_naming_the_field(converted, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for file in converted.iterdir():
        (model / file.name).write_bytes(file.read_bytes())
    card = ModelCard.load(model / "README.md")
    card.data.license = None
    card.save(model / "README.md")
    with pytest.raises(ReleaseError, match=r"the model card lacks \['license'\]"):
        assemble_release(model, tmp_path / "release", REPO_ID)
    assert not (tmp_path / "release").exists()


def test_release_folder_is_world_readable(converted, tmp_path):
    assemble_release(converted, tmp_path / "release", REPO_ID)
    folder = tmp_path / "release"
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o644}


def test_the_demo_model_releases_with_its_own_provenance_and_code(tmp_path):
    from videollm_mod import DEMO_MODEL

    names = assemble_release(DEMO_MODEL, tmp_path / "release", "me/videollm-mod-demo")
    assert {p.name for p in remote_code_files()} <= set(names)  # the demo ships as data; its code is written here
    data = ModelCard.load(tmp_path / "release" / "README.md").data
    assert (data.license, data.base_model) == ("apache-2.0", None)
    assert "Trained from scratch" in (tmp_path / "release" / "README.md").read_text()


def test_push_is_refused_when_a_weight_is_missing(converted, hub, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for file in converted.iterdir():
        (model / file.name).write_bytes(file.read_bytes())
    weights = load_file(model / "model.safetensors")
    del weights["model.layers.0.mlp.up_proj.weight"]
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ReleaseError, match=r"does not reload(.|\n)*missing_keys.*model\.layers\.0\.mlp\.up_proj\.weight"
    ):
        release(model, REPO_ID, output=tmp_path / "release")
    assert hub.repos == [] and hub.commits == []


def test_push_is_refused_when_only_the_installed_package_could_load_it(converted, hub, tmp_path, capsys):
    """Without `auto_map` the package's in-process registration would load the folder; a fresh process cannot."""
    model = tmp_path / "model"
    model.mkdir()
    for file in converted.iterdir():
        (model / file.name).write_bytes(file.read_bytes())
    config = json.loads((model / "config.json").read_text())
    del config["auto_map"]
    (model / "config.json").write_text(json.dumps(config))
    assert cli.main(["release", str(model), "--repo-id", REPO_ID, "--output", str(tmp_path / "release")]) == 1
    assert "does not reload with trust_remote_code in a fresh process" in capsys.readouterr().err
    assert hub.repos == [] and hub.commits == []


def test_a_model_over_another_decoder_family_releases_and_reloads(hub, tmp_path):
    """A Qwen3 model: its card names the family, and the fresh-process reload check (remote code only) passes."""
    from stream_helpers import make_model, stream_processor

    processor = stream_processor()
    model = make_model(processor, text_model_type="qwen3")
    model.save_pretrained(tmp_path / "qwen3")
    processor.save_pretrained(tmp_path / "qwen3")
    folder = release(tmp_path / "qwen3", "me/videollm-mod-qwen3", output=tmp_path / "release",
                     card_overrides={"license": "apache-2.0"})  # fmt: skip
    assert "Qwen3, 4 layers" in (folder / "README.md").read_text()
    assert "families_videollm_mod.py" in hub.commits[0]["files"]
