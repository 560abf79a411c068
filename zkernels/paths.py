"""Where zkernels keeps files of its own on this machine."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder for built artefacts (Qwen's offline tokenizer, the demo checkpoints):
    $ZKERNELS_CACHE, else ~/.cache/zkernels."""
    return Path(os.environ.get("ZKERNELS_CACHE", Path.home() / ".cache" / "zkernels"))
