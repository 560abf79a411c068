"""Parquet / JSON Lines in and out of Ray Datasets.

Reading is Ray's own (read tasks on the cluster). Writing streams the result through the driver into
ONE file, in row order, so `--output out.parquet` is a file and its rows line up with the input's; a
job whose output outgrows the driver should call Ray's own `ds.write_parquet(folder)` instead.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMATS = ("parquet", "jsonl")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def detect_format(path: str, format: str | None = None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        return format
    suffix = Path(str(path).rstrip("/")).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"cannot tell the format of {path!r} from its suffix; name it .parquet or .jsonl, "
                         f"or pass the format")
    return _SUFFIXES[suffix]


def read_dataset(path: str, format: str | None = None):
    """A Ray Dataset over a Parquet or JSON Lines file (or a folder of them, with format given)."""
    import ray.data
    fmt = detect_format(path, format)
    if "://" not in str(path) and not Path(path).exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if fmt == "parquet":
        return ray.data.read_parquet(str(path))
    return ray.data.read_json(str(path), lines=True)


def _arrow_columns(batch: dict):
    """pyarrow arrays for a numpy batch; 2-D arrays (embeddings, packed codes) become fixed-size lists."""
    import pyarrow as pa
    cols = {}
    for name, values in batch.items():
        values = np.asarray(values)
        if values.ndim == 2:
            flat = pa.array(np.ascontiguousarray(values).reshape(-1))
            cols[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        elif values.ndim == 1:
            cols[name] = pa.array(values.tolist() if values.dtype == object else values)
        else:
            raise TypeError(f"column {name!r} has {values.ndim} dimensions; Parquet/JSONL output takes 1 or 2")
    return pa.table(cols)


def write_dataset(ds, path: str, format: str | None = None) -> int:
    """Writes every row of `ds`, in order, to one Parquet or JSON Lines file; returns the row count."""
    import pyarrow.parquet as pq
    fmt = detect_format(path, format)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.partial")
    ds.context.execution_options.preserve_order = True
    rows, writer = 0, None
    try:
        with open(tmp, "wb") as f:
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                table = _arrow_columns(batch)
                if fmt == "parquet":
                    writer = writer or pq.ParquetWriter(f, table.schema)
                    writer.write_table(table)
                else:
                    for row in table.to_pylist():
                        f.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
                rows += table.num_rows
            if writer is not None:
                writer.close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
