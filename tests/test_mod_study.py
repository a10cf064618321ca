"""The MoD study (`recipes.mod_study --quick`): variants as the paper and the official code define them, one result
file per run, costs measured beside dense, resumable, and a report of what was written."""

import json
import os

import pytest
from safetensors.torch import load_file

from videollm_mod.recipes import mod_study
from videollm_mod.recipes.mod_study import VARIANTS


def test_variants_route_the_layers_the_official_code_routes():
    routing = {name: variant.routing(8) for name, variant in VARIANTS.items()}
    assert routing["dense"]["mod_layers"] == []
    assert routing["mod"]["mod_layers"] == [1, 3, 5, 7] and routing["mod"]["mod_keep_ratio"] == 0.2
    assert routing["mod_all"]["mod_layers"] == list(range(8))
    assert routing["mod_deep"]["mod_layers"] == [4, 5, 6, 7]
    assert [routing[f"mod_r{r}"]["mod_keep_ratio"] for r in (0.1, 0.3, 0.5)] == [0.1, 0.3, 0.5]
    assert routing["mod_random"]["mod_selection"] == "random" and routing["mod_uniform"]["mod_selection"] == "uniform"
    assert routing["mod_warmup"] == routing["mod"] and VARIANTS["mod_warmup"].capacity_warmup == 0.2
    assert routing["mod_even"]["mod_layers"] == [0, 2, 4, 6]  # the last layer sees every token
    # LayerSkip / EarlyExit drop the interval tokens too (`dropall`), unlike MoD at r = 0
    assert routing["layerskip"] == {"mod_layers": [1, 3, 5, 7], "mod_keep_ratio": 0.0, "mod_selection": "uniform",
                                    "mod_skip_interval_tokens": True}  # fmt: skip
    assert routing["earlyexit"]["mod_layers"] == [4, 5, 6, 7] and routing["earlyexit"]["mod_skip_interval_tokens"]
    assert not any(routing[name]["mod_skip_interval_tokens"] for name in VARIANTS if name.startswith("mod"))


def test_settings_override_the_plan_by_name_and_type():
    plan = mod_study.apply_settings(mod_study.StudyPlan(), {"lm_hidden": "64", "data.seconds": "30", "epochs": "2"})
    assert (plan.lm_hidden, plan.data.seconds, plan.epochs) == (64, 30.0, 2.0)
    with pytest.raises(ValueError, match="--set lm_width: no such setting"):
        mod_study.apply_settings(mod_study.StudyPlan(), {"lm_width": "64"})


def test_the_plans_schedule_and_weight_decay_reach_the_trainer(tmp_path):
    plan = mod_study.apply_settings(mod_study.StudyPlan(), {"epochs": "30", "weight_decay": "0.1"})
    args = mod_study.training_arguments(plan, seed=3, output_dir=str(tmp_path))
    assert (args.num_train_epochs, args.weight_decay, args.learning_rate, args.seed) == (30.0, 0.1, 2e-3, 3)
    assert mod_study.training_arguments(mod_study.StudyPlan(), 0, str(tmp_path)).weight_decay == 0.0


@pytest.mark.slow
def test_quick_study_writes_a_result_per_run_costs_beside_dense_and_resumes(tmp_path, monkeypatch):
    work, results = str(tmp_path / "work"), str(tmp_path / "results")
    argv = ["--quick", "--work-dir", work, "--results-dir", results, "--variants", "dense", "mod", "--seeds", "0",
            "--set", "data.frame_grid=4"]  # fmt: skip
    assert mod_study.main(argv) == 0
    runs = {name: json.load(open(os.path.join(results, "runs", f"{name}-seed0.json"))) for name in ("dense", "mod")}
    for run in runs.values():
        quality = run["quality"]
        assert 0 <= quality["free_running"]["model"]["f1"] <= 1 and quality["teacher_forced"]["model"]["lm_ppl"] >= 1
        assert set(quality["coin"]) == {"step", "next", "task"}
        assert run["training"]["steps"] > 0 and run["config"]["trained_stream_length"] > 0
    assert runs["mod"]["config"]["mod_layers"] == [1, 3] and runs["dense"]["config"]["mod_layers"] == []

    costs = json.load(open(os.path.join(results, "costs", "mod.json")))
    assert costs["flops"]["mod"] < costs["flops"]["dense"]
    # features pooled to 1 + 4 x 4 tokens a frame: a frame is cached as 18 tokens (with its interval) in the 2 dense
    # layers and 5 (k = ceil(0.2 * 17) + the interval) in the 2 routed ones
    feature_files = os.listdir(os.path.join(work, "features_1+4x4", "test"))
    assert load_file(os.path.join(work, "features_1+4x4", "test", feature_files[0]))["features"].shape[1:] == (17, 32)
    kv = costs["kv_bytes_by_frame"]
    assert kv["mod"][-1] / kv["dense"][-1] == pytest.approx((2 * 18 + 2 * 5) / (4 * 18), rel=1e-3)
    assert costs["frames_held"]["mod"] > costs["frames_held"]["dense"]
    # the same costs on a synthetic narration batch of the same shape (a narration every 4th frame)
    [layout] = costs["by_layout"]
    assert layout["narrate_every"] == 4 and 0 < layout["non_vision_share"] < costs["batch"]["non_vision_share"] < 1
    assert layout["flops"]["mod"] < layout["flops"]["dense"] and set(layout["peak_memory_bytes"]) == {"dense", "mod"}

    monkeypatch.setattr(mod_study, "run_one", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert mod_study.main(argv) == 0  # resumes: both runs and costs are done

    assert mod_study.main(["--report", "--results-dir", results]) == 0
    report = open(os.path.join(results, "RESULTS.md")).read()
    assert "| dense | 1 |" in report and "| mod | 1 |" in report
    assert "| a narration every 4 frames | " in report and os.path.exists(
        os.path.join(results, "cost_vs_token_mix.png")
    )
    assert os.path.getsize(os.path.join(results, "quality_vs_cost.png")) > 0
    assert os.path.getsize(os.path.join(results, "kv_bytes.png")) > 0


def test_a_run_is_claimed_once_and_a_dead_workers_claim_is_taken_over(tmp_path):
    path = str(tmp_path / "runs" / "mod-seed0.json")
    assert mod_study.claim(path) and not mod_study.claim(path)  # this live process holds it
    mod_study.release(path)
    with open(path + ".lock", "w") as lock:
        lock.write("999999999")  # no such process
    assert mod_study.claim(path)
    mod_study.release(path)
    open(path, "w").close()
    assert not mod_study.claim(path)  # done


def test_unprompted_share_drops_the_instruction_of_that_share_of_narration_streams_only():
    from datasets import Dataset

    def row(uid, first_turn):
        conversation = [
            {"role": "stream", "content": "", "time": 0.5, "learn": 0, "num_frames": 1},
            {"role": "user", "content": first_turn, "time": 0.5, "learn": 0, "num_frames": 0},
            {"role": "assistant", "content": "C sees a red circle appear.", "time": 0.5, "learn": 1, "num_frames": 0},
        ]
        return {"video_uid": uid, "video": f"{uid}.mp4", "fps": 2.0, "start_frame": 0, "stop_frame": 1,
                "conversation": conversation}  # fmt: skip

    uids = [f"video-{i}" for i in range(200)]
    train = {
        "narration": Dataset.from_list([row(uid, "Please narrate.") for uid in uids]),
        "livechat": Dataset.from_list([row(uid, "Tell me whenever something changes.") for uid in uids]),
        "coin": {},
    }
    prompted = mod_study.training_rows(train, 1 / 3)
    rows = mod_study.training_rows(train, 1 / 3, unprompted_share=0.5)
    assert len(rows) == len(prompted) == 200  # each video once
    openings = [next((m["content"] for m in r["conversation"] if m["role"] == "user"), None) for r in rows]
    narrated = [o for o in openings if o != "Tell me whenever something changes."]
    assert 0.4 < narrated.count(None) / len(narrated) < 0.6  # half of the narration streams, by video id
    assert all(o in (None, "Please narrate.") for o in narrated) and openings.count(None) == narrated.count(None)
    # the rest of an unprompted stream is as it was
    unprompted = next(r for r, o in zip(rows, openings, strict=True) if o is None)
    assert [m["role"] for m in unprompted["conversation"]] == ["stream", "assistant"]


def test_an_unprompted_stream_may_start_before_its_first_narration_in_silence_as_narrate_starts_a_video():
    from datasets import Dataset

    def row(uid, start):  # a narration stream as the data scripts write it: it starts on its first narration's frame
        conversation = [
            {"role": "stream", "content": "", "time": start / 2, "learn": 0, "num_frames": 1},
            {"role": "user", "content": "Please narrate.", "time": start / 2, "learn": 0, "num_frames": 0},
            {"role": "assistant", "content": "C sees a red circle appear.", "time": start / 2, "learn": 1,
             "num_frames": 0},
            {"role": "stream", "content": "", "time": start / 2 + 1, "learn": 2, "num_frames": 2},
            {"role": "assistant", "content": "C sees the red circle turn blue.", "time": start / 2 + 1, "learn": 1,
             "num_frames": 0},
        ]  # fmt: skip
        return {"video_uid": uid, "video": f"{uid}.mp4", "fps": 2.0, "start_frame": start, "stop_frame": start + 3,
                "conversation": conversation}  # fmt: skip

    starts = {f"video-{i}": i % 7 for i in range(300)}
    narration = Dataset.from_list([row(uid, start) for uid, start in starts.items()])
    train = {"narration": narration, "livechat": narration.select([]), "coin": {}}
    rows = mod_study.training_rows(train, 0.0, unprompted_share=1.0, lead_in_frames=4)
    leads = []
    for r in rows:
        start, first, *rest = starts[r["video_uid"]], *r["conversation"]
        lead = start - r["start_frame"]
        leads.append(lead)
        assert 0 <= lead <= min(4, start) and r["stop_frame"] == start + 3  # never before the video, never past 4
        # the lead-in frames and the narration's frame: one stream, all learned (silence, then speak); without a
        # lead-in, the stream as written (its first frame unlearned, as the original's)
        assert (first["role"], first["num_frames"], first["learn"]) == ("stream", 1 + lead, 1 + lead if lead else 0)
        assert first["time"] == start / 2  # a stream's time is its last frame's (`_stream.stream`): the narration's
        assert [m["role"] for m in rest] == ["assistant", "stream", "assistant"]  # the rest as it was
        assert rest[1]["num_frames"] == 2 and sum(m["num_frames"] for m in r["conversation"]) == 3 + lead
    assert set(leads) == {0, 1, 2, 3, 4}  # drawn by video, from 0 (the stream as written) to the limit
    # without a lead-in, the unprompted streams start where they did; prompted streams never move
    assert [r["start_frame"] for r in mod_study.training_rows(train, 0.0, unprompted_share=1.0)] == list(
        starts.values()
    )
    assert [r["start_frame"] for r in mod_study.training_rows(train, 0.0, lead_in_frames=4)] == list(starts.values())


def test_a_list_setting_is_parsed_as_integers():
    plan = mod_study.apply_settings(mod_study.StudyPlan(), {"cost_layouts": "2,8"})
    assert plan.cost_layouts == (2, 8)
    with pytest.raises(ValueError, match="--set cost_layouts=2,x: expected a comma-separated list of integers"):
        mod_study.apply_settings(mod_study.StudyPlan(), {"cost_layouts": "2,x"})
