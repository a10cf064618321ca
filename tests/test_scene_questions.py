"""Scene questions: short clips of a training video, each with one question about the screen
(`recipes.scene_questions`)."""

from dataclasses import asdict

from datasets import Dataset

from videollm_mod.data_scripts._hub import conversation_features
from videollm_mod.data_scripts.synthetic import Event
from videollm_mod.recipes import mod_study
from videollm_mod.recipes.scene_questions import LEAD_FRAMES, scene_rows

FPS = 2.0

# a red circle appears, a blue square appears below it, the circle moves right (its row stays), the square leaves
EVENTS = [
    Event("appear", 0, 1.0, 1.5, "circle", "red", position=(0.3, 0.3), narration_time=1.5),
    Event("appear", 1, 4.0, 4.5, "square", "blue", position=(0.7, 0.7), narration_time=4.5),
    Event("move", 0, 7.0, 7.25, "circle", "red", direction="right", narration_time=7.5),
    Event("disappear", 1, 10.0, 10.5, "square", "blue", narration_time=10.5),
]
# what is true half-way through each gap (by hand), for each question the world may ask there
TRUTH = {
    3.0: {"How many shapes do you see?": "One.", "What do you see now?": "I see a red circle.",
          "What just happened?": "A red circle appeared.", "What colour is the circle?": "Red."},
    6.0: {"How many shapes do you see?": "Two.", "What do you see now?": "I see a red circle and a blue square.",
          "What just happened?": "A blue square appeared.", "What colour is the circle?": "Red.",
          "What colour is the square?": "Blue."},
    9.0: {"How many shapes do you see?": "Two.", "What do you see now?": "I see a red circle and a blue square.",
          "What just happened?": "The red circle moved right.", "What colour is the circle?": "Red.",
          "What colour is the square?": "Blue."},
}  # fmt: skip
EVENT_FRAME = {3.0: 3, 6.0: 9, 9.0: 15}  # the frame of the event that opens each gap


def videos(count: int = 1):
    rows = [{"video_uid": f"video-{i}", "video": f"video-{i}.mp4", "fps": FPS, "duration": 12.0} for i in range(count)]
    return rows, {row["video_uid"]: [asdict(e) for e in EVENTS] for row in rows}


def test_each_gap_is_asked_about_once_with_the_answer_true_of_the_screen_there():
    rows = scene_rows(*videos(), per_video=5)
    assert len(rows) == 3  # three gaps between four events
    for row in rows:
        clip, question, answer = row["conversation"]
        time = question["time"]
        assert TRUTH[time][question["content"]] == answer["content"]
        assert question["role"] == "user" and answer["role"] == "assistant" and answer["time"] == time
        assert (clip["role"], clip["learn"], answer["learn"], question["learn"]) == ("stream", 0, 1, 0)
        # the clip ends on the question's frame and shows the event that opened the gap, from a little before it
        assert row["stop_frame"] - 1 == round(time * FPS) == round(clip["time"] * FPS)
        assert max(EVENT_FRAME[time] - LEAD_FRAMES, 0) <= row["start_frame"] <= EVENT_FRAME[time]
        assert clip["num_frames"] == row["num_frames"] == row["stop_frame"] - row["start_frame"]


def test_per_video_picks_distinct_gaps_and_the_draw_is_fixed_by_video():
    rows = scene_rows(*videos(40), per_video=2)
    by_video = {}
    for row in rows:
        by_video.setdefault(row["video_uid"], []).append(row["conversation"][1]["time"])
    assert all(len(set(times)) == 2 for times in by_video.values()) and len(by_video) == 40
    assert len({tuple(times) for times in by_video.values()}) > 1  # videos draw their own gaps
    assert len({row["conversation"][1]["content"] for row in rows}) >= 4  # and their own questions
    assert scene_rows(*videos(40), per_video=2) == rows


def test_training_rows_add_the_scene_questions_and_keep_the_rest():
    rows, events = videos(6)
    narration = [{**row, "start_frame": 0, "stop_frame": 25, "num_frames": 25,
                  "conversation": [{"role": "stream", "content": "", "time": 12.0, "learn": 25, "num_frames": 25}]}
                 for row in rows]  # fmt: skip
    prepared = Dataset.from_list(narration, features=conversation_features())  # as the prepare scripts write it
    train = {"narration": prepared, "livechat": prepared, "coin": {}, "events": events}
    plain = mod_study.training_rows(train, 0.0)
    asked = mod_study.training_rows(train, 0.0, scene_questions=2)
    assert len(asked) == len(plain) + 12
    assert asked.select(range(len(plain)))["conversation"] == plain["conversation"]
    assert sorted(asked["length"][len(plain) :]) == sorted(
        mod_study.approximate_tokens(row, 11) for row in scene_rows(rows, events, 2)
    )
