"""The web demo as a Hugging Face Space: the same app as `videollm-mod demo` (`videollm_mod.web_demo`).

A Gradio Space runs this file; the Space's `requirements.txt` installs this package with its demo extra, and the
Space variable `VIDEOLLM_MOD_MODEL` (a Hub repo id) picks the model (default: the demo model shipped in the package),
loaded under the package's loading policy (README, "Security"): a model of another `model_type` that ships its own code
loads only with the Space variable `VIDEOLLM_MOD_TRUST_REMOTE_CODE=1`.
Gradio listens where the Space tells it (`GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`). Locally: `python app.py`.
"""

import os
import sys

from videollm_mod.cli import run
from videollm_mod.web_demo import PROG, main

if __name__ == "__main__":
    model = os.environ.get("VIDEOLLM_MOD_MODEL")
    argv = ["--model", model] if model else []
    if os.environ.get("VIDEOLLM_MOD_TRUST_REMOTE_CODE") == "1":  # the Space owner's consent
        argv.append("--trust-remote-code")
    sys.exit(run(PROG, main, argv))
