"""The output's columns and types, decided once: the input dataset's schema (its columns keep their
types and their nulls) plus the column a job adds. Every batch is cast to it, so a column that is all
null in one batch, or a nullable int that pandas turned into floats in another, cannot make two batches
disagree and a writer fail part way.
"""
from __future__ import annotations

import json

# The Arrow extension type Ray gives a column of mixed Python values (a JSON Lines column holding
# strings in some rows and numbers or objects in others): pickles that no other reader understands.
RAY_OBJECTS = "ray.data.arrow_pickled_object"


def holds_objects(kind) -> bool:
    return getattr(kind, "extension_name", None) == RAY_OBJECTS


def objects_as_text(column):
    """A column of mixed Python values as text: strings as they are, nulls as nulls, any other value as
    its JSON text (5 -> "5", {"a": 1} -> '{"a": 1}')."""
    import pyarrow as pa
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
                     for v in column.to_pylist()], type=pa.string())


def arrow_schema(ds):
    """The Ray Dataset's schema as a pyarrow Schema (what Ray reports: a Parquet input's declared
    schema; a JSON Lines input's as Ray infers it), or None when Ray cannot tell. A column Ray holds as
    mixed Python objects becomes text (see objects_as_text); others whose type Ray cannot express in
    Arrow are left out (they pass through as they come)."""
    import pyarrow as pa
    schema = ds.schema()
    if schema is None:
        return None
    base = getattr(schema, "base_schema", None)
    if isinstance(base, pa.Schema):
        fields = list(base)  # without metadata (pandas' index notes and the like)
    else:
        fields = [pa.field(name, pa.string() if kind is object else kind) for name, kind in
                  zip(schema.names, schema.types) if kind is object or isinstance(kind, pa.DataType)]
    return pa.schema([pa.field(f.name, pa.string()) if holds_objects(f.type) else f for f in fields])


def with_column(schema, name: str, kind):
    """`schema` with the field `name` set to `kind`: replaced where the input has that column, else
    appended."""
    import pyarrow as pa
    if schema is None:
        return None
    fields = [pa.field(name, kind) if f.name == name else f for f in schema]
    if name not in schema.names:
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def conform(table, schema):
    """`table` with the columns of `schema` in its order and types (a column the batch lacks becomes
    nulls); columns the schema does not name follow as they are. Casts are safe: a value that does not
    convert raises a ValueError naming the column."""
    import pyarrow as pa
    if schema is None:
        return table
    columns, names = [], []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if holds_objects(column.type):
                column = objects_as_text(column)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                    raise ValueError(f"column {field.name!r}: the output's schema (the input's, as Ray reports it) "
                                     f"types it {field.type}, but a batch holds {column.type} values that do not "
                                     f"convert ({e}); give the input one type per column (e.g. convert it to "
                                     f"Parquet)") from None
        else:
            column = pa.nulls(table.num_rows, field.type)
        columns.append(column)
        names.append(field.name)
    for name in table.column_names:
        if name not in schema.names:
            columns.append(table.column(name))
            names.append(name)
    return pa.Table.from_arrays(columns, names=names)
