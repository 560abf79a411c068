from .kernels import get_ops, resolve_backend  # noqa: F401
