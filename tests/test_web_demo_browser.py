"""The web demo in a real browser: `videollm-mod demo` started on a free local port, driven by headless Chromium
(Playwright, with the system's Chromium: `apt-get install chromium`). An uploaded 20 s synthetic clip is narrated in
the page, the first line being the model's own first reply; a question typed mid-stream is answered; the timeline is
drawn; a corrupt upload shows a readable error. Timings are printed, not asserted. Skipped, with the reason, when
gradio, playwright or Chromium is missing. `VIDEOLLM_MOD_SCREENSHOT=docs/web_demo.png` also saves the screenshot
there (the README's)."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("gradio", reason="the web demo needs gradio: pip install 'videollm-mod[demo]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs playwright: pip install playwright"
)


def find_chromium() -> str | None:
    for name in (os.environ.get("VIDEOLLM_MOD_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,  # a browser and a server
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium on this machine (apt-get install chromium): browser test of the demo skipped",
    ),
]
# This machine's network is closed: without the background-networking flags Chromium's own connections are refused.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a synthetic camera (a moving pattern), allowed without asking, for the live camera test
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
FPS = 2.0
NARRATION_LINE = "#narration .bot-row .message"
SERVER_START_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`videollm-mod demo` on a free local port, in its own process, with the shipped demo model."""
    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "videollm_mod.cli", "demo", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen([*command, "--no-example"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"videollm-mod demo exited with {server.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"videollm-mod demo did not listen within {SERVER_START_SECONDS} s:\n{log.read_text()}"
                    )
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh profile
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1000},
            permissions=["camera"],
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A held-out 20 s synthetic clip, H.264 (what a browser plays), as the app's example."""
    from videollm_mod.web_demo import render_example_video

    return render_example_video(str(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def say(pytestconfig):
    """Print a line to the test log past pytest's capture (the timings are reported, not asserted)."""
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def say(text: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n{text}", flush=True)

    return say


@pytest.fixture(scope="module")
def narrating(browser, app_url, clip, say):
    """A page on the app with the clip uploaded, once its first narration line has appeared."""
    page = browser.new_page()
    page.goto(app_url)
    page.wait_for_selector("#video input[type=file]", state="attached")
    started = time.monotonic()
    page.set_input_files("#video input[type=file]", clip)
    page.wait_for_selector(NARRATION_LINE, timeout=60_000)
    first_line_after = time.monotonic() - started
    say(f"web demo: upload to first narration line {first_line_after:.2f} s ({page.inner_text(NARRATION_LINE)!r})")
    yield page
    page.close()


def stamped(line: str) -> tuple[float, str]:
    """`(time, text)` of a chat line rendered from `**{time:.1f} s** {text}`."""
    match = re.fullmatch(r"(\d+\.\d) s\s+(.*)", line.strip(), flags=re.S)
    assert match, line
    return float(match[1]), match[2].strip()


def test_first_narration_line_is_the_models_first_reply(narrating, clip):
    from videollm_mod.loading import load_model_and_processor

    model, processor = load_model_and_processor(None, device="cpu")
    first = next(
        e for e in model.stream_generate(clip, processor, fps=FPS, max_new_tokens=64) if e.role == "assistant"
    )
    assert stamped(narrating.locator(NARRATION_LINE).first.inner_text()) == (round(first.time, 1), first.text)


def test_question_typed_mid_stream_is_answered(narrating, say):
    assert narrating.inner_text("#status").startswith("Narrating"), "the stream ended before the question"
    question = "What do you see?"
    asked = time.monotonic()
    narrating.fill("#question textarea", question)
    narrating.press("#question textarea", "Enter")
    user = narrating.locator("#narration .user-row .message").filter(has_text=question)
    answer = user.locator("xpath=following::div[contains(@class, 'bot-row')]//div[contains(@class, 'message')]")
    answer.first.wait_for(timeout=30_000)
    say(f"web demo: question answered {time.monotonic() - asked:.2f} s after it was sent")
    asked_at, text = stamped(user.first.inner_text())
    answered_at, reply = stamped(answer.first.inner_text())
    assert text == question and reply and answered_at == asked_at


def test_timeline_is_drawn_and_the_stream_ends(narrating, tmp_path, say):
    narrating.wait_for_function(
        "document.querySelector('#status').innerText.startsWith('Done')", timeout=90_000, polling=500
    )
    assert narrating.locator("#timeline img").count() == 1
    narrating.locator("#narration .user-row").first.scroll_into_view_if_needed()  # the question in the picture
    path = tmp_path / "web_demo.png"
    narrating.screenshot(path=str(path), full_page=True)
    if target := os.environ.get("VIDEOLLM_MOD_SCREENSHOT"):
        shutil.copy(path, target)
    say(f"web demo: {narrating.inner_text('#status')}; screenshot {path}")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrupt_upload_shows_a_readable_error_and_the_upload_control_comes_back(browser, app_url, tmp_path):
    """The message names the user's file (not Gradio's copy in a hash folder) without an errno; no output turns to
    an error; the video is cleared, so another can be dropped at once; one close button dismisses the messages."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video\n" * 200)
    page = browser.new_page()
    try:
        page.goto(app_url)
        page.wait_for_selector("#video input[type=file]", state="attached")
        page.set_input_files("#video input[type=file]", str(bad))
        message = (
            "bad.mp4: not a readable video (truncated or not a video file: Invalid data found when processing input)"
        )
        page.get_by_text(message, exact=True).wait_for(timeout=60_000)
        page.locator("#video").get_by_text("Click to Upload").wait_for(timeout=10_000)
        assert page.get_by_text(re.compile(r"[0-9a-f]{64}|Errno")).count() == 0
        assert page.get_by_text("Error", exact=True).count() == 0, "an output shows an error of its own"
        close = page.get_by_role("button", name="Close", exact=True)
        assert close.count() == 1
        close.click()
        page.get_by_text(message, exact=True).wait_for(state="detached", timeout=10_000)
    finally:
        page.close()


def test_live_camera_frames_reach_the_model_and_questions_are_answered(browser, app_url, say):
    page = browser.new_page()
    try:
        page.goto(app_url)
        page.get_by_role("tab", name="Live camera").click()
        page.get_by_text("Click to Access Webcam").click()
        page.locator("#camera button").filter(has_text="Record").click()
        page.wait_for_function(
            "/^Camera: ([3-9]|\\d\\d+) frames/.test(document.querySelector('#status').innerText)", timeout=60_000
        )
        page.fill("#question textarea", "What do you see?")
        page.press("#question textarea", "Enter")
        user = page.locator("#narration .user-row .message").filter(has_text="What do you see?")
        answer = user.locator("xpath=following::div[contains(@class, 'bot-row')]//div[contains(@class, 'message')]")
        answer.first.wait_for(timeout=30_000)
        say(f"web demo, live camera: {page.inner_text('#status')}")
        asked_at, _ = stamped(user.first.inner_text())
        answered_at, reply = stamped(answer.first.inner_text())
        assert asked_at > 0 and answered_at == asked_at and reply
    finally:
        page.close()
