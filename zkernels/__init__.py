from .kernels import get_ops, resolve_backend  # noqa: F401
from .binary import BinaryIndex, quantize  # noqa: F401,E402
