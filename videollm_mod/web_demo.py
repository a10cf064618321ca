"""`videollm-mod demo`: a web app that narrates a video live, in the browser (Gradio; `pip install
"videollm-mod[demo]"`).

    videollm-mod demo                                   # the shipped demo model, http://127.0.0.1:7860
    videollm-mod demo --model path/or/repo --host 0.0.0.0 --port 8080

Upload a video (or record one with the webcam): it plays while the model watches it at the video's own pace, and
each line of narration appears beside it at its video time. Or turn on the live camera: its frames go to the model as
they come, stamped with the time the model takes them. A question typed mid-stream is answered at the current
frame, as soon as the model is free. Threshold and frame rate apply from the next run; a plot follows P(stay silent)
per frame with the threshold, the replies and the questions (the figure of `videollm_mod.timeline`).

The app only drives the model's own streaming API (`model.stream_session`, `push_frames`, `push_query`, the session's
`events` and `decisions`): there is no second inference path. A recorded video is paced to real time; when the model
falls behind, the frames that are due go in together, through the session's chunked path (one forward for a silent
run of frames, identical to frame by frame), so the narration catches up instead of lagging more and more.

The API ("Use via API", `gradio_client`) offers two endpoints: `narrate` (a video file, the threshold, the frames per
second and whether to keep the video's pace -> the conversation, the status line and the plot) and `ask` (a question
-> the emptied question box, the conversation and the plot); a client's session gets its own stream, as a browser
tab does.

`app.py` at the repository's top runs the same app as a Hugging Face Space (see `build_app`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator

from .errors import UserError
from .loading import add_model_arguments
from .narrate import DEFAULT_THRESHOLD

logger = logging.getLogger(__name__)

PROG = "videollm-mod demo"
# Frames per forward when the model is behind the video (the chunked path) or when pacing is off.
CHUNK_SIZE = 8
# Redraw the plot at most this often while a stream runs (seconds): drawing costs CPU that the model needs.
PLOT_EVERY_SECONDS = 1.0


class LiveNarration:
    """The stream of one browser tab: its session, and the questions typed while it runs.

    The stream runs in one handler (`narrate`, a generator) while questions arrive in another (`ask`). A session is
    not thread-safe, so while a stream runs only its loop touches the session: a question is queued and answered by
    the loop at the current frame as soon as the model is free (between two forwards). Without a running stream a
    question is answered at once, after the last frame seen.

    Args:
        model, processor: a loaded VideoLLM-MoD model (eval mode) and its processor.
        max_new_tokens: the longest reply.
    """

    def __init__(self, model, processor, max_new_tokens: int = 64):
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens
        self.session = None
        self.duration: float | None = None
        self.lock = threading.Lock()  # held while the session runs a forward
        self.questions: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.running = False
        self.run_id = 0  # a new run or `stop()` ends the loop of the one before
        self.camera_started: float | None = None  # when the live camera's first frame came (monotonic seconds)

    def new_session(self, threshold: float = DEFAULT_THRESHOLD):
        return self.model.stream_session(
            self.processor, threshold=threshold, max_new_tokens=self.max_new_tokens, chunk_size=CHUNK_SIZE
        )

    def ask(self, text: str) -> bool:
        """Ask a question: queued for the running stream (answered at its current frame), or answered now. Returns
        whether it was answered now (it is in `self.session.events` then)."""
        text = text.strip()
        if not text:
            return False
        with self.lock:
            if self.running:
                self.questions.put(text)
                return False
            if self.session is None:
                self.session = self.new_session()
            self.session.push_query(text)
            return True

    def stop(self) -> None:
        """End the running stream's loop after its current forward, or the live camera's stream."""
        with self.lock:
            self.run_id += 1
            self.running, self.camera_started = False, None

    def push_camera_frame(self, frame, threshold: float = DEFAULT_THRESHOLD) -> None:
        """Feed a frame of a live camera, (H, W, 3) uint8, stamped with the time since the camera's first frame at the
        moment the model takes it. The first frame starts a new session (ending a running video's), `stop()` ends it;
        questions are answered at once, after the latest frame (`ask`)."""
        with self.lock:
            if self.camera_started is None:
                self.run_id += 1
                self.running, self.session, self.duration = False, self.new_session(threshold), None
                self.camera_started = time.monotonic()
            self.session.push_frame(frame, time.monotonic() - self.camera_started)

    def narrate(
        self, video: str, fps: float, threshold: float = DEFAULT_THRESHOLD, realtime: bool = True
    ) -> Iterator[int]:
        """Stream a video file through a new session, paced to real time (or not), answering queued questions
        between forwards. Yields the number of frames fed so far, after every step (the caller redraws from
        `self.session`)."""
        from modeling_videollm_mod import CatchUpBatches, iter_video_frames, video_num_frames

        total = video_num_frames(video, fps)  # a corrupt or empty file fails here, before the stream starts
        session = self.new_session(threshold)
        with self.lock:
            self.run_id += 1
            run_id, self.session, self.duration, self.running = self.run_id, session, total / fps, True
        fed = 0
        try:
            for batch in CatchUpBatches(iter_video_frames(video, fps), realtime, max_batch=CHUNK_SIZE):
                with self.lock:
                    if self.run_id != run_id:
                        return
                    self._answer_questions()
                    if batch:
                        times, frames = zip(*batch, strict=True)
                        session.push_frames(frames, times)
                        fed += len(batch)
                yield fed
        finally:
            with self.lock:
                if self.run_id == run_id:
                    self.running = False
                    self._answer_questions()  # those queued while the last frames ran
        yield fed

    def _answer_questions(self) -> None:
        while not self.questions.empty():
            self.session.push_query(self.questions.get())

    def messages(self) -> list[dict]:
        """The conversation so far as chat messages (`{"role", "content"}`), each stamped with its video time."""
        events = self.session.events if self.session is not None else []
        return [{"role": e.role, "content": f"**{e.time:.1f} s** {e.text}"} for e in events]

    def figure(self):
        """The timeline figure of the stream so far (None before the first frame)."""
        from .timeline import Timeline, timeline_figure

        if self.session is None or not self.session.decisions:
            return None
        s = self.session
        return timeline_figure(Timeline.from_stream(s.decisions, s.threshold, s.events, duration=self.duration))


def build_app(model, processor, example_videos: list[str] = (), max_new_tokens: int = 64):
    """The Gradio app (a `gr.Blocks`, not launched) over a loaded model; every browser tab gets its own stream."""
    import gradio as gr

    from modeling_videollm_mod import StreamContextLimitError, VideoDecodingError, video_num_frames

    default_fps = float(processor.image_processor.fps)

    def new_tab() -> LiveNarration:
        return LiveNarration(model, processor, max_new_tokens=max_new_tokens)

    def refusal(error: Exception, video: str) -> gr.Error:
        """The error shown for `video`, logged in one line: the path of an upload is Gradio's copy (in a hash
        folder), so the message names the user's file by its name."""
        message = " ".join(str(error).split()).replace(video, os.path.basename(video))
        logger.warning(message)
        return gr.Error(message, duration=None, print_exception=False)

    def check_upload(video) -> None:
        """Refuse an upload the model cannot read before a stream starts (the page then clears the upload)."""
        if video:
            try:
                video_num_frames(video, default_fps)
            except VideoDecodingError as error:
                raise refusal(error, video) from None

    def run(video, threshold, fps, realtime, live: LiveNarration | None):
        """Narrate the video: yields (chat, status, plot, the tab's stream). A page's stream comes from its load
        event; an API client loads no page, so its call makes its own."""
        if not video:
            raise gr.Error("Upload a video or record one with the webcam first.", print_exception=False)
        live = live or new_tab()
        started, drawn, fed, mine, shown = time.monotonic(), -math.inf, 0, None, None
        steps = live.narrate(video, fps, threshold, realtime)
        try:
            for fed in steps:
                mine = mine or live.session
                if shown == (fed, len(live.session.events)):  # waiting for the next frame: nothing new to show
                    continue
                shown, now = (fed, len(live.session.events)), time.monotonic()
                redraw = now - drawn >= PLOT_EVERY_SECONDS
                drawn = now if redraw else drawn
                yield live.messages(), status(live, fed, started), live.figure() if redraw else gr.skip(), live
        except (ValueError, OSError, StreamContextLimitError) as error:  # a corrupt video, a stream too long
            raise refusal(error, video) from None
        if live.session is mine:  # not replaced by a newer run
            yield live.messages(), status(live, fed, started, done=True), live.figure(), live

    def status(live: LiveNarration, fed: int, started: float, done: bool = False) -> str:
        if not live.session or not live.session.decisions:
            return "Starting…"
        video_time = live.session.decisions[-1][0]
        lag = time.monotonic() - started - video_time
        head = "Done" if done else "Narrating"
        return f"{head}: {fed} frames, {video_time:.1f} s of {live.duration:.1f} s (behind the video by {lag:.1f} s)"

    def stop_stream(live: LiveNarration) -> str:
        if live is None:
            return "Upload a video to start."
        live.stop()
        seen = live.session.decisions if live.session is not None else []
        return f"Stopped at {seen[-1][0]:.1f} s." if seen else "Stopped."

    def watch(frame, threshold, live: LiveNarration):
        """One frame of the live camera: fed to the model, the page redrawn (the plot about once a second)."""
        if frame is None or live is None:
            return gr.skip(), gr.skip(), gr.skip()
        live.push_camera_frame(frame, threshold)
        decisions = live.session.decisions
        redraw = len(decisions) % max(1, round(default_fps * PLOT_EVERY_SECONDS)) == 1
        camera_status = f"Camera: {len(decisions)} frames, {decisions[-1][0]:.1f} s"
        return live.messages(), camera_status, live.figure() if redraw else gr.skip()

    def ask(text: str, live: LiveNarration | None):
        """Answer a question (at the running stream's current frame, or now): (question box, chat, plot, stream)."""
        live = live or new_tab()  # an API client's first call
        answered = live.ask(text)
        return "", live.messages() if answered else gr.skip(), live.figure() if answered else gr.skip(), live

    with gr.Blocks(title="VideoLLM-MoD: live narration") as app:
        gr.Markdown(
            "## VideoLLM-MoD: live video narration\n"
            "Upload a video (or record one), or turn on the live camera. The model watches as the video plays and "
            "narrates when it decides to speak (when P(stay silent) after a frame falls below the threshold). Ask a "
            "question at any time: it is answered at the current frame."
        )
        live = gr.State()
        with gr.Row():
            with gr.Column(scale=5):
                with gr.Tab("Video"):
                    video = gr.Video(label="Video", sources=["upload", "webcam"], elem_id="video", height=360)
                with gr.Tab("Live camera", elem_id="camera-tab"):
                    camera = gr.Image(
                        label=f"Live camera ({default_fps:g} frames per second)", sources=["webcam"], streaming=True,
                        type="numpy", elem_id="camera", height=360,
                    )  # fmt: skip
                with gr.Row():
                    threshold = gr.Slider(0.0, 1.0, value=DEFAULT_THRESHOLD, step=0.005, label="Threshold")
                    fps = gr.Slider(0.5, 8.0, value=default_fps, step=0.5, label="Frames per second")
                realtime = gr.Checkbox(value=True, label="At the video's pace (off: as fast as the model runs)")
                with gr.Row():
                    narrate_button = gr.Button("Narrate", variant="primary", elem_id="narrate")
                    stop_button = gr.Button("Stop", elem_id="stop")
                if example_videos:
                    gr.Examples(
                        [[v] for v in example_videos], inputs=[video], label="Or pick a clip, then Narrate",
                        cache_examples=False,
                    )  # fmt: skip
            with gr.Column(scale=6):
                chat = gr.Chatbot(
                    label="Narration", elem_id="narration", height=360, group_consecutive_messages=False,
                    buttons=["copy_all"],
                )  # fmt: skip
                with gr.Row():
                    question = gr.Textbox(
                        placeholder="Ask about the current frame…", show_label=False, elem_id="question", scale=5
                    )
                    send = gr.Button("Ask", elem_id="ask", scale=1)
                status_line = gr.Markdown("Upload a video to start.", elem_id="status")
        plot = gr.Plot(label="P(stay silent) per frame", elem_id="timeline")

        # The API offers `narrate` and `ask` (see the module's docstring); the other events are the page's own.
        page_only = {"api_visibility": "private"}
        app.load(new_tab, outputs=live, **page_only)
        # the player starts with the stream, so that the narration appears at the video's time
        play = "(...args) => { const v = document.querySelector('#video video'); if (v) { v.currentTime = 0; v.play(); } return args; }"  # noqa: E501
        inputs, outputs = [video, threshold, fps, realtime, live], [chat, status_line, plot, live]
        # An upload is checked first: one the model cannot read is refused in a message (no output turns to an
        # error) and cleared, so that the upload control is back at once.
        upload = video.upload(check_upload, video, None, **page_only)
        upload.failure(lambda: None, None, video, **page_only)
        streams = [
            narrate_button.click(run, inputs, outputs, js=play, api_name="narrate"),
            upload.success(run, inputs, outputs, js=play, **page_only),
            video.stop_recording(run, inputs, outputs, **page_only),
            camera.stream(
                watch,
                [camera, threshold, live],
                outputs[:3],
                stream_every=1 / default_fps,
                show_progress="hidden",
                **page_only,
            ),
        ]
        for trigger in (stop_button.click, video.clear, camera.clear):
            trigger(stop_stream, live, status_line, cancels=streams, **page_only)
        question.submit(ask, [question, live], [question, chat, plot, live], api_name="ask")
        send.click(ask, [question, live], [question, chat, plot, live], **page_only)
    return app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--host", default=None, help="address to listen on (default: Gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, help="longest reply in tokens (default: %(default)s)"
    )
    parser.add_argument("--no-example", action="store_true", help="do not render the synthetic example clip")
    args = parser.parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        parser.error(f"--port {args.port} must lie in 1..65535")
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be >= 1")
    return args


def render_example_video(folder: str, seed: int = 2024) -> str:
    """A held-out synthetic clip (as `narrate --demo` renders it) re-encoded as H.264, which browsers play."""
    import os

    from modeling_videollm_mod import load_video

    from .data_scripts._video import write_video
    from .narrate import render_demo_videos

    fps = 4.0
    frames, _ = load_video(render_demo_videos(folder, seed)[0], fps)
    path = os.path.join(folder, f"synthetic_{seed}.mp4")
    write_video(path, frames, fps, codec="libx264")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError('the web demo needs gradio: pip install "videollm-mod[demo]"') from None
    import tempfile

    from .loading import load_model_and_processor

    model, processor = load_model_and_processor(args.model, args.device, args.trust_remote_code, args.allow_pickle)
    with tempfile.TemporaryDirectory(prefix="videollm-mod-demo-") as folder:
        examples = [] if args.no_example else [render_example_video(folder)]
        app = build_app(model, processor, examples, max_new_tokens=args.max_new_tokens)
        # quiet: Gradio's lines end with a hint to set `share=True`, not an option here; the address is printed below.
        app.queue().launch(
            server_name=args.host, server_port=args.port, allowed_paths=[folder], quiet=True, prevent_thread_lock=True
        )
        print(f"the demo runs at {app.local_url} (Ctrl-C stops it)")
        app.block_thread()
    return 0


if __name__ == "__main__":
    from .cli import run

    sys.exit(run(PROG, main, sys.argv[1:]))
