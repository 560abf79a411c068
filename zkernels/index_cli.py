"""Old import path: the `index` commands live in zkernels/cli/index.py."""
from .cli.index import CHUNK, DEMO_EMBEDDER, DEMO_RERANKER, add_index_subcommands  # noqa: F401
