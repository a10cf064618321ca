"""A live chat's questions put into the narration stream of the same video (`recipes.narration_questions`)."""

from datasets import Dataset

from videollm_mod.data_scripts._stream import message, stream
from videollm_mod.recipes import mod_study
from videollm_mod.recipes.narration_questions import chat_questions, with_questions

FPS = 2.0


def narration():
    """Frames 0..9 (0 to 4.5 s): a reply at frame 2 and at frame 6; the first stream's frames are not learned."""
    return [
        stream(3, 2, FPS, learn=0),
        message("assistant", "C sees a red circle appear.", 1.0, learn=1),
        stream(4, 6, FPS),
        message("assistant", "C sees the red circle move up.", 3.0, learn=1),
        stream(3, 9, FPS),
    ]


def chat():
    return [
        message("user", "Tell me whenever something changes.", 0.0),
        stream(3, 2, FPS),
        message("assistant", "A red circle appears.", 1.0, learn=1),
        stream(2, 4, FPS),
        message("user", "What colour is the circle?", 2.0),
        message("assistant", "Red.", 2.0, learn=1),
        stream(2, 6, FPS),
        message("assistant", "The red circle moves up.", 3.0, learn=1),
        message("user", "How many shapes do you see?", 3.0),
        message("assistant", "One.", 3.0, learn=1),
        stream(3, 9, FPS),
    ]


def test_chat_questions_are_the_turns_answered_at_their_own_time():
    pairs = chat_questions(chat())
    assert [(q["content"], a["content"], q["time"]) for q, a in pairs] == [
        ("What colour is the circle?", "Red.", 2.0),
        ("How many shapes do you see?", "One.", 3.0),
    ]


def test_questions_cut_a_stream_at_their_frame_or_follow_what_is_said_at_its_last_frame():
    out = with_questions(narration(), chat_questions(chat()), FPS)
    said = [(m["role"], m["content"] or m["num_frames"], m["time"], m["learn"]) for m in out]
    assert said == [
        ("stream", 3, 1.0, 0),
        ("assistant", "C sees a red circle appear.", 1.0, 1),
        ("stream", 2, 2.0, 2),  # frames 3 and 4, cut at the question's frame
        ("user", "What colour is the circle?", 2.0, 0),
        ("assistant", "Red.", 2.0, 1),
        ("stream", 2, 3.0, 2),  # frames 5 and 6
        ("assistant", "C sees the red circle move up.", 3.0, 1),  # the reply at frame 6 comes first
        ("user", "How many shapes do you see?", 3.0, 0),
        ("assistant", "One.", 3.0, 1),
        ("stream", 3, 4.5, 3),
    ]
    assert sum(m["num_frames"] for m in out) == sum(m["num_frames"] for m in narration()) == 10


def test_a_cut_stream_keeps_its_learned_leading_frames_and_a_late_question_is_left_out():
    conversation = [stream(6, 5, FPS, learn=4), message("assistant", "C sees a blue square appear.", 2.5, learn=1)]
    late = (message("user", "What just happened?", 9.0), message("assistant", "It moved.", 9.0, learn=1))
    early = (message("user", "What do you see now?", 0.5), message("assistant", "I see nothing.", 0.5, learn=1))
    out = with_questions(conversation, [late, early], FPS)
    assert [(m["role"], m["num_frames"], m["learn"]) for m in out] == [
        ("stream", 2, 2),  # frames 0 and 1, both learned
        ("user", 0, 0),
        ("assistant", 0, 1),
        ("stream", 4, 2),  # frames 2 to 5, the first two learned
        ("assistant", 0, 1),
    ]


def test_question_share_gives_that_share_of_narration_streams_their_videos_questions():
    uids = [f"video-{i}" for i in range(200)]

    def row(uid, conversation):
        return {"video_uid": uid, "video": f"{uid}.mp4", "fps": FPS, "start_frame": 0, "stop_frame": 10,
                "conversation": conversation}  # fmt: skip

    train = {
        "narration": Dataset.from_list([row(uid, narration()) for uid in uids]),
        "livechat": Dataset.from_list([row(uid, chat()) for uid in uids]),
        "coin": {},
    }
    rows = mod_study.training_rows(train, 1 / 3, question_share=0.5)
    narrated = [r["conversation"] for r in rows if r["conversation"][0]["role"] == "stream"]
    asked = [c for c in narrated if any(m["role"] == "user" for m in c)]
    assert 0.4 < len(asked) / len(narrated) < 0.6
    assert all(c == with_questions(narration(), chat_questions(chat()), FPS) for c in asked)
    assert mod_study.training_rows(train, 1 / 3)["conversation"] != rows["conversation"]
