"""zkernels: fast, exact scoring for Qwen3-based rerankers and embedders."""
from .config import CheckpointError, Qwen3Config
from .kernels import get_ops, resolve_backend
from .reranker import Reranker
from .embedder import Embedder
from .pipeline import Pipeline

__all__ = ["CheckpointError", "Embedder", "Pipeline", "Qwen3Config", "Reranker", "get_ops", "resolve_backend"]
