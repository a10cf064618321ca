"""VideoLLM-MoD: streaming video LLM with Mixture-of-Depths vision computation, native to Hugging Face transformers.

Importing the package also registers the model with the Auto classes, so a saved folder loads with
`AutoModelForCausalLM.from_pretrained(folder)` in-process; elsewhere `trust_remote_code=True` loads the copied code.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .budget_videollm_mod import CacheBudget
from .cache_videollm_mod import VideoLLMMoDCache
from .configuration_videollm_mod import VideoLLMMoDConfig
from .live_videollm_mod import CatchUpBatches, PacedFrames, is_live_source
from .modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDModel, VideoLLMMoDPreTrainedModel
from .processing_videollm_mod import VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
from .session_videollm_mod import DEFAULT_THRESHOLD, StreamContextLimitError, speaks
from .sink_cache_videollm_mod import SinkWindowCache
from .stream_state_videollm_mod import StreamEvent
from .streaming_videollm_mod import VideoLLMMoDBatchStreamSession, VideoLLMMoDStreamSession
from .video_videollm_mod import VideoDecodingError, iter_video_frames, load_video, video_num_frames

AutoConfig.register(VideoLLMMoDConfig.model_type, VideoLLMMoDConfig, exist_ok=True)
AutoModel.register(VideoLLMMoDConfig, VideoLLMMoDModel, exist_ok=True)
AutoModelForCausalLM.register(VideoLLMMoDConfig, VideoLLMMoDForCausalLM, exist_ok=True)
AutoModelForImageTextToText.register(VideoLLMMoDConfig, VideoLLMMoDForCausalLM, exist_ok=True)
AutoImageProcessor.register(VideoLLMMoDConfig, VideoLLMMoDFrameProcessor, exist_ok=True)
AutoProcessor.register(VideoLLMMoDConfig, VideoLLMMoDProcessor, exist_ok=True)

__all__ = [
    "DEFAULT_THRESHOLD",
    "CacheBudget",
    "CatchUpBatches",
    "PacedFrames",
    "SinkWindowCache",
    "StreamContextLimitError",
    "StreamEvent",
    "VideoDecodingError",
    "VideoLLMMoDCache",
    "VideoLLMMoDConfig",
    "VideoLLMMoDForCausalLM",
    "VideoLLMMoDFrameProcessor",
    "VideoLLMMoDModel",
    "VideoLLMMoDBatchStreamSession",
    "VideoLLMMoDPreTrainedModel",
    "VideoLLMMoDProcessor",
    "VideoLLMMoDStreamSession",
    "is_live_source",
    "iter_video_frames",
    "load_video",
    "speaks",
    "video_num_frames",
]
