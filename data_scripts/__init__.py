"""Data scripts for VideoLLM-MoD: one small program per dataset.

Each module is runnable as ``python -m data_scripts.<name> --help`` and exposes ``main(argv=None)``:

- ``synthetic``: procedurally rendered shape videos + annotations in the original Ego4D / COIN schemas.
- ``prepare_ego4d_narration``: Ego4D (refined) narration streams -> parquet ``DatasetDict`` + card.
- ``prepare_ego4d_goalstep_livechat``: Ego4D GoalStep live-chat dialogues -> parquet ``DatasetDict`` + card.
- ``prepare_coin``: the five COIN benchmarks (step, next, task, procedure, taskprocedure) -> parquet + card.
- ``precompute_features``: frozen vision tower -> ``[T, frame_num_tokens, D]`` safetensors per video.
"""

SCRIPTS = (
    "synthetic",
    "prepare_ego4d_narration",
    "prepare_ego4d_goalstep_livechat",
    "prepare_coin",
    "precompute_features",
)
