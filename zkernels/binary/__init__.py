"""Binary (1 bit per dimension) embeddings: quantization and exact Hamming top-k search.

`quantize` turns float embeddings into packed bits exactly as sentence-transformers does;
`BinaryIndex` searches them by Hamming distance (C++ AVX-512/AVX2 kernel on CPU, CUDA kernel on GPU)
and can rescore the Hamming candidates with float dot products.
"""
from .index import DEFAULT_RESCORE_MULTIPLIER, BinaryIndex, HammingResult, RescoredResult
from .quantize import quantize
from .topk_contract import FILL_DISTANCE

__all__ = ["BinaryIndex", "DEFAULT_RESCORE_MULTIPLIER", "FILL_DISTANCE", "HammingResult", "RescoredResult", "quantize"]
