"""Old import path of `zkernels.random_checkpoints` (tiny random Qwen3 checkpoints), kept for users' code."""
from .random_checkpoints import *  # noqa: F401,F403
from .random_checkpoints import make_tiny_checkpoint, make_tiny_embedding_checkpoint, random_model_from_config  # noqa: F401
