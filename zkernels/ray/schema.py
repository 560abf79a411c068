"""The output's columns and types, decided once: the input dataset's schema (its columns keep their
types and their nulls) plus the column a job adds. Every batch is cast to it, so a column that is all
null in one batch, or a nullable int that pandas turned into floats in another, cannot make two batches
disagree and a writer fail part way.
"""
from __future__ import annotations


def arrow_schema(ds):
    """The Ray Dataset's schema as a pyarrow Schema (what Ray reports: a Parquet input's declared
    schema; a JSON Lines input's as Ray infers it), or None when Ray cannot tell. Columns whose type Ray
    cannot express in Arrow are left out (they pass through as they come)."""
    import pyarrow as pa
    schema = ds.schema()
    if schema is None:
        return None
    base = getattr(schema, "base_schema", None)
    if isinstance(base, pa.Schema):
        return pa.schema(list(base))  # without metadata (pandas' index notes and the like)
    return pa.schema([(name, kind) for name, kind in zip(schema.names, schema.types)
                      if isinstance(kind, pa.DataType)])


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
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                    raise ValueError(f"column {field.name!r}: the input's schema types it {field.type}, but a "
                                     f"batch holds {column.type} values that do not convert ({e}); give the "
                                     f"input one type per column (e.g. convert it to Parquet)") from None
        else:
            column = pa.nulls(table.num_rows, field.type)
        columns.append(column)
        names.append(field.name)
    for name in table.column_names:
        if name not in schema.names:
            columns.append(table.column(name))
            names.append(name)
    return pa.Table.from_arrays(columns, names=names)
