"""Which rows can be scored: the query, document or text cell of a row must be a string. A null, or a
value of another type, makes the row invalid, and `on_invalid` says what happens to it: "error" stops
the job (InvalidRowError), "null" scores the valid rows and gives the invalid ones a null.

Batches come as pyarrow Tables (what zkernels' own jobs use) or as Ray's numpy dicts. Nothing here
imports ray; `first_invalid_row` takes a Ray Dataset and only calls its methods.
"""
from __future__ import annotations

import numpy as np

ON_INVALID = ("error", "null")


class InvalidRowError(TypeError):
    """A row whose query, document or text is a null or not a string, with on_invalid="error"."""


def check_on_invalid(on_invalid: str) -> str:
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    return on_invalid


def describe_cell(value) -> str:
    """"a null (missing) value" or "int: 7", for messages about a cell that is not a string."""
    if value is None or isinstance(value, float) and value != value:  # NaN: a null that went through pandas
        return "a null (missing) value"
    return f"{type(value).__name__}: {value!r:.80}"


def _is_string_type(kind) -> bool:
    import pyarrow as pa
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def text_cells(batch, name: str) -> tuple[list, np.ndarray]:
    """(the column's cells as Python values, a bool mask of the rows whose cell is a string)."""
    if isinstance(batch, dict):
        if name not in batch:
            raise KeyError(f"column {name!r} is missing; the data has columns {sorted(batch)}")
        values = batch[name]
        cells = values.tolist() if isinstance(values, np.ndarray) else list(values)
        return cells, np.fromiter((isinstance(v, str) for v in cells), dtype=bool, count=len(cells))
    if name not in batch.column_names:
        raise KeyError(f"column {name!r} is missing; the data has columns {sorted(batch.column_names)}")
    column = batch.column(name)
    cells = column.to_pylist()
    if _is_string_type(column.type):
        valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    else:  # null-typed (all null), numbers where text belongs, or Ray's mixed Python objects: cell by cell
        valid = np.fromiter((isinstance(v, str) for v in cells), dtype=bool, count=len(cells))
    return cells, valid


def valid_rows(batch, columns: list[str], on_invalid: str, what: str) -> tuple[dict[str, list], np.ndarray]:
    """({column: cells}, mask of the rows whose every text column holds a string). With
    on_invalid="error" the first invalid row raises InvalidRowError; `what` names the output a null
    would go to ("score", "embedding") in the hint."""
    cells, valid = {}, None
    for name in columns:
        cells[name], ok = text_cells(batch, name)
        if on_invalid == "error" and not ok.all():
            row = int(np.argmin(ok))
            raise InvalidRowError(
                f"column {name!r} must hold strings, but a row holds {describe_cell(cells[name][row])} "
                f"(row {row} of this batch); pass on_invalid='null' to score the other rows and give such "
                f"rows a null {what}")
        valid = ok if valid is None else valid & ok
    return cells, valid


def first_invalid_row(ds, columns: list[str]) -> tuple[int, str, str] | None:
    """(position in the input counting from 0, column, what the cell holds) of the first row of the Ray
    Dataset `ds` whose text columns are not all strings; None when every row is valid. Reads only those
    columns, in order, and stops at that row: run when a job stopped on an invalid row, to say where it is
    (a Ray batch does not know its offset in the input)."""
    ds = ds.select_columns(list(columns))
    ds.context.execution_options.preserve_order = True
    offset = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        masks = {name: text_cells(batch, name) for name in columns}
        bad = [(int(np.argmin(ok)), name) for name, (_, ok) in masks.items() if not ok.all()]
        if bad:
            row, name = min(bad, key=lambda b: (b[0], columns.index(b[1])))
            return offset + row, name, describe_cell(masks[name][0][row])
        offset += batch.num_rows
    return None
