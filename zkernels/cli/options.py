"""Options and argument types shared by the commands, so every command spells and checks them alike."""
from __future__ import annotations

import argparse

from .. import formats, kernels
from ..options import QUANTIZE_MODES, TOKENS_PER_BATCH_HELP, EngineOptions

DTYPES = ("float32", "bfloat16", "float16")  # what zkernels' loaders accept by name (bf16/fp16 aliases aside)


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1, checked when the command line is read (before any model loads)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def utf8_text(text: str) -> str:
    """argparse type: text that is valid UTF-8. Python hands undecodable argv bytes over as lone
    surrogates, which would fail deep in the tokenizer; say so here instead."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raw = e.object[e.start:e.end].encode("utf-8", "surrogateescape")
        raise argparse.ArgumentTypeError(f"is not valid UTF-8 text: bytes {raw!r} at character {e.start}; "
                                         f"pass UTF-8 (check the terminal's or the script's encoding)") from None
    return text


def add_top_k(p: argparse.ArgumentParser, default: int | None, what: str = "results to print") -> None:
    p.add_argument("--top-k", "--k", dest="top_k", type=positive_int, default=default, metavar="N",
                   help=f"{what} (default: {default if default is not None else 'all'}); --k is an alias")


def add_progress(p: argparse.ArgumentParser) -> None:
    """--progress / --no-progress, one meaning everywhere: progress bars forced on, off, or (default)
    shown when stderr is a terminal. The value is a show_progress_bar for the API (None, True, False)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress bars on stderr (default: only when stderr is a terminal)")


def add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default=None, choices=kernels.BACKENDS,
                   help="kernel backend (default: triton on cuda; cpu, the C++ kernels, on cpu; env ZKERNELS_BACKEND)")


def add_device(p: argparse.ArgumentParser, default: str | None = "cpu", default_help: str = "cpu") -> None:
    """The engine options (zkernels.EngineOptions): --device, --dtype, --backend, --max-tokens-per-batch,
    --quantize. `engine_options(args)` turns them into an EngineOptions."""
    p.add_argument("--device", default=default, help=f"torch device: cpu, cuda or cuda:N (default: {default_help})")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="weights and activations dtype (default: float32 on cpu, bfloat16 on cuda)")
    add_backend(p)
    p.add_argument("--max-tokens-per-batch", type=positive_int, default=None, metavar="N", help=TOKENS_PER_BATCH_HELP)
    add_quantize(p)


def add_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", default=None, choices=QUANTIZE_MODES,
                   help="linear weights and activations: int8 (cpu with AVX512-VNNI, AVX-VNNI or AMX-INT8), fp8 "
                        "(cuda sm_89+) or none (default: what the checkpoint records, else none)")


def add_engine_flags(p: argparse.ArgumentParser, default: str | None = "cpu", default_help: str = "cpu") -> None:
    """Every flag `engine_options(args)` reads: add_device's and --progress."""
    add_device(p, default, default_help)
    add_progress(p)


def engine_options(args: argparse.Namespace, device: str | None = None) -> EngineOptions:
    """The EngineOptions the command line asks for (add_device's and add_progress's flags); `device`
    replaces --device where the command resolves it itself."""
    return EngineOptions(device=device or args.device, dtype=args.dtype, backend=args.backend,
                         max_tokens_per_batch=args.max_tokens_per_batch, show_progress=args.progress,
                         quantize=getattr(args, "quantize", None))


def add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default=None, choices=formats.FORMATS,
                   help="scoring recipe of the reranker (default: what the checkpoint declares)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per result (rank, corpus_id, line, score, text)")


def add_ranked_output(p: argparse.ArgumentParser, top_k_default: int | None) -> None:
    """What documents.print_ranked prints: how many results (--top-k) and in which form (--json)."""
    add_top_k(p, default=top_k_default)
    add_json(p)


def add_documents(p: argparse.ArgumentParser) -> None:
    p.add_argument("--documents", required=True, metavar="FILE",
                   help="UTF-8 text file, one document per line (blank lines skipped), or .jsonl/.ndjson "
                        "(each line a JSON string or {\"text\": ...})")


def add_query(p: argparse.ArgumentParser) -> None:
    p.add_argument("--query", required=True, type=utf8_text, help="the query text")
