"""zkernels: fast, exact scoring for Qwen3-based rerankers and embedders, and binary Hamming search."""
from .binary import BinaryIndex, quantize
from .config import CheckpointError, Qwen3Config
from .embedder import Embedder
from .kernels import get_ops, resolve_backend
from .options import EngineOptions
from .pipeline import Pipeline
from .reranker import Reranker

__all__ = ["BinaryIndex", "CheckpointError", "Embedder", "EngineOptions", "Pipeline", "Qwen3Config", "Reranker",
           "get_ops", "quantize", "resolve_backend"]
