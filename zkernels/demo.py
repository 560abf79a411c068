"""Old import path: `zkernels demo` lives in zkernels/cli/demo.py."""
from .cli.demo import DEMO_CONFIG, DOCUMENTS, QUERY, demo_checkpoint, run_demo  # noqa: F401
