"""Parquet / JSON Lines in and out of Ray Datasets.

Reading is Ray's own (read tasks on the cluster). Writing goes one of two ways, by what `path` names:
- a file (`scored.parquet`, `scored.jsonl`): the rows stream through the driver into ONE file, in row
  order, so its rows line up with the input's. It is written as `<path>.partial` and renamed at the
  end (an existing file is replaced then); on an error nothing is left behind.
- a folder (a path ending in "/", an existing directory, or a URI such as s3://bucket/scored/): Ray's
  write tasks write many files from the workers (see sinks.py), no row passes through the driver. The
  folder must be absent or empty; on an error the files this write made are removed.

Every batch is cast to one schema (the first batch's; zkernels' jobs already cast each batch to the
input's schema plus the new column), so a writer never meets two batches that disagree. JSON Lines
output is strict JSON: a NaN or infinite float is written as null.
"""
from __future__ import annotations

from pathlib import Path

from .rows import WriteSummary, json_lines, null_count
from .sinks import write_folder

FORMATS = ("parquet", "jsonl")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
FOLDER_DEFAULT_FORMAT = "parquet"


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


def is_folder(path: str) -> bool:
    """Whether an output path names a folder: it ends in "/", is an existing directory, or is a URI
    (s3://..., gs://..., file://...)."""
    path = str(path)
    return path.endswith("/") or "://" in path or Path(path).is_dir()


def folder_format(path: str, format: str | None = None) -> str:
    """A folder's file format: `format`, else its name's suffix (`scored.jsonl/`), else Parquet."""
    if format is not None:
        return detect_format(path, format)
    return _SUFFIXES.get(Path(str(path).rstrip("/")).suffix.lower(), FOLDER_DEFAULT_FORMAT)


def read_dataset(path: str, format: str | None = None):
    """A Ray Dataset over a Parquet or JSON Lines file (or a folder of them, with format given)."""
    import ray.data
    fmt = detect_format(path, format)
    if "://" not in str(path) and not Path(path).exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if fmt == "parquet":
        return ray.data.read_parquet(str(path))
    return ray.data.read_json(str(path), lines=True)


def write_dataset(ds, path: str, format: str | None = None) -> int:
    """Writes every row of `ds` to `path` (a file: in order; a folder: many files, see the module's
    docstring); returns the row count."""
    return write_output(ds, path, format).rows


def write_output(ds, path: str, format: str | None = None, *, null_column: str | None = None) -> WriteSummary:
    """write_dataset, with what it did: rows, how many rows hold a null in `null_column` (the score or
    embedding of invalid rows), files."""
    if is_folder(path):
        return write_folder(ds, str(path), folder_format(path, format), null_column=null_column)
    return write_file(ds, str(path), detect_format(path, format), null_column=null_column)


def write_file(ds, path: str, fmt: str, *, null_column: str | None = None) -> WriteSummary:
    """One file, in row order, through the driver."""
    import pyarrow.parquet as pq

    from .schema import conform
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.partial")
    ds.context.execution_options.preserve_order = True
    rows, nulls, writer, schema = 0, 0, None, None
    try:
        with open(tmp, "wb") as f:
            try:
                for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    if table.num_rows == 0:
                        continue
                    schema = schema or table.schema.remove_metadata()
                    table = conform(table, schema)
                    if fmt == "parquet":
                        writer = writer or pq.ParquetWriter(f, schema)
                        writer.write_table(table)
                    else:
                        f.write(json_lines(table))
                    rows += table.num_rows
                    nulls += null_count(table, null_column)
            finally:
                if writer is not None:
                    writer.close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return WriteSummary(rows, nulls, 1, path)
