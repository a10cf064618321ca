"""`recipes.train_demo`: the MoD study's `mod` run packaged as a demo folder (data only, with its validation figures
and card), and the run reused from the work folder when it is there."""

import json

import pytest
import torch

from videollm_mod.recipes import train_demo


@pytest.mark.slow
def test_quick_demo_is_the_studys_mod_even_run_packaged_with_its_figures_and_reused(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from modeling_videollm_mod import VideoLLMMoDForCausalLM

    work, out = tmp_path / "work", tmp_path / "demo"
    assert train_demo.main(["--quick", "--work-dir", str(work), "--output-dir", str(out)]) == 0
    assert not list(out.glob("*.py"))  # the demo ships as data
    model = VideoLLMMoDForCausalLM.from_pretrained(out)
    assert model.config.mod_layers == [0, 2] and model.config.mod_keep_ratio == 0.2  # the study's even layers
    assert model.config.text_config.model_type == "qwen3"
    assert model.config.frame_token_pooled == [6, 6] and model.config.frame_num_tokens == 37  # the demo's 1 + 6 x 6
    metrics = json.loads((out / "demo_metrics.json").read_text())
    assert metrics["variant"] == "mod_even" and metrics["plan"]["eval_split"] == "val"
    assert metrics["plan"]["epochs"] == 1.0 and metrics["training"]["steps"] > 0  # the smoke plan's, not the demo's 30
    # the demo's 90 quiet streams, and the seed the shipped demo was picked by
    assert metrics["plan"]["data"]["quiet_videos"] == 90 and metrics["seed"] == train_demo.DEMO_SEED
    card = ModelCard.load(out / "README.md")
    stated = {(r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert stated == {(r.metric_type, r.metric_value) for r in train_demo.demo_eval_results(metrics)}

    # a second call finds the trained run in the work folder: the same weights, nothing trained again, whatever the
    # thread count; another recipe is trained anew
    class TrainedAgain(Exception):
        pass

    def train_variant(*args, **kwargs):
        raise TrainedAgain

    monkeypatch.setattr("videollm_mod.recipes.mod_study.train_variant", train_variant)
    # as kept before two settings existed, trained as their defaults train: reused
    [record] = work.glob("runs/demo-mod_even-seed*/training.json")
    kept = json.loads(record.read_text())
    assert (kept["plan"]["weight_decay"], kept["plan"]["data"]["event_interval"]) == (0.0, 2.5)  # the defaults
    del kept["plan"]["weight_decay"], kept["plan"]["data"]["event_interval"]
    record.write_text(json.dumps(kept))
    again = tmp_path / "again"
    assert train_demo.main(["--quick", "--work-dir", str(work), "--output-dir", str(again), "--set", "threads=1"]) == 0
    with pytest.raises(TrainedAgain):
        train_demo.main(
            ["--quick", "--work-dir", str(work), "--output-dir", str(tmp_path / "other"), "--set", "lm_layers=3"]
        )
    reused = json.loads((again / "demo_metrics.json").read_text())["training"]
    assert reused == metrics["training"] and reused["threads"] == 2  # the threads it was trained with, not 1
    # a reused run ships the very files a fresh one does (loading and saving again would add `dtype` and the
    # tokenizer's `is_local`); only the figures' file (its command) and the card may differ
    shipped = {f.name: f.read_bytes() for f in out.iterdir() if f.name not in ("demo_metrics.json", "README.md")}
    assert shipped == {f.name: f.read_bytes() for f in again.iterdir() if f.name in shipped} and len(shipped) >= 7
    reloaded = VideoLLMMoDForCausalLM.from_pretrained(again)
    weights, reloaded_weights = model.state_dict(), reloaded.state_dict()
    assert weights.keys() == reloaded_weights.keys()
    assert all(torch.equal(weights[name], reloaded_weights[name]) for name in weights)


def test_a_bad_setting_is_one_line(capsys):
    assert train_demo.main(["--set", "lm_width=3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --set lm_width: no such setting") and len(err.strip().splitlines()) == 1
