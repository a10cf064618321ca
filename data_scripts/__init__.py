"""Data scripts of VideoLLM-MoD: one small program per dataset (`videollm-mod data NAME --help`).

Each module exposes ``main(argv=None) -> int`` (also runnable as ``python -m videollm_mod.data_scripts.NAME``):

- ``synthetic``: procedurally rendered shape videos + annotations in the original Ego4D / COIN schemas.
- ``prepare_ego4d_narration``: Ego4D (refined) narration streams -> parquet ``DatasetDict`` + card.
- ``prepare_ego4d_goalstep_livechat``: Ego4D GoalStep live-chat dialogues -> parquet ``DatasetDict`` + card.
- ``prepare_coin``: the five COIN benchmarks (step, next, task, procedure, taskprocedure) -> parquet + card.
- ``synthetic_egoexo4d``: synthetic Ego-Exo4D takes (ego videos, takes.json, atomic descriptions, keysteps).
- ``prepare_egoexo4d``: Ego-Exo4D ego-view narration and keystep recognition streams -> parquet + card.
- ``precompute_features``: frozen vision tower -> ``[T, frame_num_tokens, D]`` safetensors per video.
"""

# name: the extra of pyproject.toml it needs beyond the core install (`videollm-mod data NAME` checks it first).
SCRIPTS = {
    "synthetic": None,
    "prepare_ego4d_narration": "data",
    "prepare_ego4d_goalstep_livechat": "data",
    "prepare_coin": "data",
    "synthetic_egoexo4d": None,
    "prepare_egoexo4d": "data",
    "precompute_features": None,  # with --dataset it reads a prepared dataset: `_hub.load_prepared_dataset` says so
}
