"""The web demo's stream, without a browser: it is the model's own streaming (the same events as `stream_generate`),
a question typed mid-stream is answered at the current frame, frames are paced by their times and caught up in
chunks, bad input is refused; `videollm-mod demo` reports a bad option or model in one line."""

import glob
import os
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

import modeling_videollm_mod  # noqa: F401  registers the classes: the demo is data, loaded with this package's code
from modeling_videollm_mod import CatchUpBatches
from videollm_mod import DEMO_MODEL, cli
from videollm_mod.web_demo import LiveNarration

FPS = 2.0


@pytest.fixture(scope="module")
def demo():
    model = AutoModelForCausalLM.from_pretrained(str(DEMO_MODEL), trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(str(DEMO_MODEL), trust_remote_code=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An 8 s held-out synthetic clip (an event every ~2 s)."""
    from videollm_mod.data_scripts import synthetic

    folder = tmp_path_factory.mktemp("clip")
    paths = synthetic.generate_dataset(
        str(folder / "syn"), num_videos=1, seconds=8, fps=4.0, resolution=32, seed=777, num_coin_videos=0
    )
    return glob.glob(os.path.join(paths["ego4d_videos"], "*.mp4"))[0]


def pairs(count: int, step: float = 0.05) -> list[tuple[float, int]]:
    return [(i * step, i) for i in range(count)]


def test_unpaced_batches_are_chunks_in_order():
    assert list(CatchUpBatches(pairs(7), realtime=False, max_batch=3)) == [pairs(7)[:3], pairs(7)[3:6], pairs(7)[6:]]


def test_catch_up_batches_release_no_frame_before_its_time():
    start, released = time.monotonic(), []
    for batch in CatchUpBatches(pairs(4), realtime=True):
        released += [(due, time.monotonic() - start) for due, _ in batch]
    assert [due for due, _ in released] == [due for due, _ in pairs(4)]
    assert all(at >= due for due, at in released)


def test_catch_up_batches_catch_up_in_one_chunk_when_the_consumer_falls_behind():
    batches = []
    for batch in CatchUpBatches(pairs(4), realtime=True, max_batch=8):
        if batch:
            batches.append(batch)
            if len(batches) == 1:
                time.sleep(0.3)  # a slow model: every later frame is due when it comes back
    assert batches == [pairs(4)[:1], pairs(4)[1:]]


def test_live_narration_gives_the_events_of_stream_generate(demo, clip):
    model, processor = demo
    live = LiveNarration(model, processor, max_new_tokens=16)
    fed = list(live.narrate(clip, FPS, realtime=False))
    expected = list(model.stream_generate(clip, processor, fps=FPS, max_new_tokens=16))
    assert fed[-1] == 16
    assert any(e.role == "assistant" for e in expected)
    assert live.session.events == expected


def test_question_typed_mid_stream_is_answered_at_the_current_frame(demo, clip):
    model, processor = demo
    live = LiveNarration(model, processor, max_new_tokens=32)
    steps = live.narrate(clip, FPS, realtime=False)
    next(steps)
    current = live.session.decisions[-1][0]
    assert live.ask("What do you see?") is False  # queued: the stream owns the session
    next(steps)
    user = [i for i, e in enumerate(live.session.events) if e.role == "user"]
    assert len(user) == 1
    question, answer = live.session.events[user[0] : user[0] + 2]
    assert (question.time, question.text) == (current, "What do you see?")
    assert answer.role == "assistant" and answer.time == current


def test_question_without_a_stream_is_answered_at_once(demo):
    live = LiveNarration(*demo, max_new_tokens=8)
    assert live.ask("Hello?") is True
    assert [(e.time, e.role) for e in live.session.events] == [(0.0, "user"), (0.0, "assistant")]


def test_stop_ends_the_running_stream(demo, clip):
    live = LiveNarration(*demo, max_new_tokens=8)
    steps = live.narrate(clip, FPS, realtime=False)
    fed = next(steps)
    live.stop()
    assert list(steps) == [] and len(live.session.decisions) == fed < 16


def test_messages_are_stamped_with_their_video_time(demo):
    live = LiveNarration(*demo, max_new_tokens=8)
    live.ask("Hello?")
    answer = live.session.events[1].text
    assert live.messages() == [
        {"role": "user", "content": "**0.0 s** Hello?"},
        {"role": "assistant", "content": f"**0.0 s** {answer}"},
    ]


def test_corrupt_upload_fails_before_the_stream_starts_and_names_the_file(demo, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    live = LiveNarration(*demo)
    with pytest.raises(ValueError, match="bad.mp4"):
        next(live.narrate(str(bad), FPS))
    assert live.session is None and not live.running


def test_demo_command_rejects_a_bad_port(capsys):
    assert cli.main(["demo", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_demo_command_names_a_missing_model_folder_in_one_line(tmp_path, capsys):
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install 'videollm-mod[demo]')")
    missing = str(tmp_path / "no_such_model")
    assert cli.main(["demo", "--model", missing, "--no-example"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"videollm-mod demo: {missing}: no such model folder"


def test_camera_frames_are_stamped_in_order_and_stop_starts_a_new_session(demo):
    live = LiveNarration(*demo, max_new_tokens=8)
    frames = torch.randint(0, 256, (4, 48, 64, 3), dtype=torch.uint8).numpy()
    for frame in frames[:3]:
        live.push_camera_frame(frame, threshold=0.0)
    first = live.session
    times = [t for t, _ in first.decisions]
    assert len(times) == 3 and 0 <= times[0] < times[1] < times[2]
    live.stop()
    live.push_camera_frame(frames[3], threshold=0.0)
    assert live.session is not first and len(live.session.decisions) == 1


def test_demo_command_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` meets where it is not installed
    assert cli.main(["demo", "--no-example"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == 'videollm-mod demo: the web demo needs gradio: pip install "videollm-mod[demo]"'
    )


@pytest.fixture(scope="module")
def served(demo):
    """The app launched on a free local port in this process, as `videollm-mod demo` serves it (replies of at most
    16 tokens)."""
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install 'videollm-mod[demo]')")
    import socket

    from videollm_mod.web_demo import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        app = build_app(*demo, max_new_tokens=16)
        app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield app
        app.close()


def test_api_narrates_an_uploaded_video_without_a_browser_and_answers_questions(demo, clip, served):
    """`gradio_client` (the page's "Use via API") gets the conversation of `stream_generate`; its session (no page
    loaded) gets its own stream, which a later question in the same session is answered from."""
    from gradio_client import Client, handle_file

    from modeling_videollm_mod import DEFAULT_THRESHOLD

    model, processor = demo
    expected = [
        f"**{e.time:.1f} s** {e.text}" for e in model.stream_generate(clip, processor, fps=FPS, max_new_tokens=16)
    ]
    client = Client(served.local_url, verbose=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/narrate", "/ask"}
    chat, status, _ = client.predict(handle_file(clip), DEFAULT_THRESHOLD, FPS, False, api_name="/narrate")
    assert expected and [m["content"][0]["text"] for m in chat] == expected
    assert status.startswith("Done: 16 frames, 7.5 s of 8.0 s")
    _, chat, _ = client.predict("What do you see?", api_name="/ask")
    assert [(m["role"], m["content"][0]["text"].split(" s** ")[0]) for m in chat[len(expected) :]] == [
        ("user", "**7.5"),
        ("assistant", "**7.5"),
    ]
    assert chat[len(expected)]["content"][0]["text"] == "**7.5 s** What do you see?"


def test_corrupt_upload_is_refused_in_one_line_naming_the_users_file(served, tmp_path, caplog, capfd):
    """The message names the file the user gave (not Gradio's copy of it in a hash folder), with no errno; the server
    logs one line and prints no traceback."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video\n" * 200)
    client = Client(served.local_url, verbose=False)
    message = "bad.mp4: not a readable video (truncated or not a video file: Invalid data found when processing input)"
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(bad)), 0.725, FPS, False, api_name="/narrate")
    assert str(error.value) == message
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("videollm_mod")] == [
        ("videollm_mod.web_demo", "WARNING", message)
    ]
    assert "Traceback" not in capfd.readouterr().err


def test_app_has_the_elements_the_page_is_driven_by(demo):
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install 'videollm-mod[demo]')")
    from videollm_mod.web_demo import build_app

    app = build_app(*demo)
    ids = {block.elem_id for block in app.blocks.values() if getattr(block, "elem_id", None)}
    assert {"video", "camera", "narrate", "stop", "narration", "question", "ask", "status", "timeline"} <= ids
