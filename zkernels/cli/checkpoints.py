"""Checks of a checkpoint argument made before any model loads: that it names a model folder, and one of
the kind the option needs (an embedding checkpoint for `index --model`, a reranker for `--reranker` and
`rerank --model`). Loading a model takes seconds to minutes; a wrong path should not."""
from __future__ import annotations

from pathlib import Path

from ..config import CheckpointError, read_json
from ..declared import module_kind, read_modules
from ..loading import resolve_checkpoint

EMBEDDER, RERANKER = "embedding", "reranker"
CONFIG_PATTERNS = ("*.json", "*.py")  # enough of a hub checkpoint to tell what it is


def checkpoint_kind(folder: Path, name: str = "") -> str | None:
    """EMBEDDER, RERANKER, or None where the folder does not say. A declaration that cannot be read says
    nothing here: loading the model reports it with the loader's own message."""
    from ..reranker import detect_format

    try:
        kinds = {module_kind(m) for m in read_modules(folder) or []}
    except (CheckpointError, OSError):
        kinds = set()
    if "Pooling" in kinds:  # a sentence-transformers embedding model pools token states into one vector
        return EMBEDDER
    try:
        config = read_json(folder / "config.json")
    except (CheckpointError, OSError):
        config = None
    archs = config.get("architectures") or [] if isinstance(config, dict) else []
    if "LogitScore" in kinds or any(str(a).endswith("ForSequenceClassification") for a in archs):
        return RERANKER
    if detect_format(folder, name) is not None:
        return RERANKER
    return None


def check_checkpoint(value: str, flag: str, want: str, other_flag: str | None = None) -> None:
    """Raises ValueError naming `flag` if `value` is not a checkpoint folder (or hub id) of kind `want`;
    other_flag: the command's option for the other kind, named in the message."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {value} is a file; pass the checkpoint's folder")
    folder = resolve_checkpoint(value, allow_patterns=CONFIG_PATTERNS)  # a hub id: its config files only
    if not (folder / "config.json").is_file():
        raise ValueError(f"{flag} {value} has no config.json: not a model checkpoint folder")
    kind = checkpoint_kind(folder, value)
    if kind is not None and kind != want:
        hint = f"; pass it as {other_flag}" if other_flag else ""
        raise ValueError(f"{flag} {value} is {'an' if kind == EMBEDDER else 'a'} {kind} checkpoint, but {flag} "
                         f"needs {'an' if want == EMBEDDER else 'a'} {want} checkpoint{hint}")
