"""Checkpoint tools: VideoLLM-online -> VideoLLM-MoD conversion (`videollm-mod convert`) and Hub releases
(`videollm-mod release`). Not part of the remote code."""

from .checkpoint_io import ConversionError
from .convert_videollm_online import KEY_RULES, build_plan, convert
from .model_card import render_model_card

__all__ = ["KEY_RULES", "ConversionError", "build_plan", "convert", "render_model_card"]
