"""Old import path: the documents-file reader lives in zkernels/cli/documents.py."""
from .cli.documents import print_ranked, read_documents, read_numbered_documents  # noqa: F401
