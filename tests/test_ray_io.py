"""zkernels.ray's writers and the invalid-row finder on a local Ray, over datasets that need no model
(plain Ray tasks, no actors)."""
from __future__ import annotations

import datetime
import json
import math

import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from zkernels.ray.columns import first_invalid_row  # noqa: E402
from zkernels.ray.io import write_dataset, write_output  # noqa: E402

pytest_plugins = ["_ray_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")

SCHEMA = pa.schema([("id", pa.int64()), ("note", pa.string()), ("x", pa.float64()),
                    ("at", pa.timestamp("us")), ("score", pa.float32())])


def blocks() -> list:
    """Three blocks of one schema whose first block has only nulls in `id` and `note`: types a writer
    that looks at each batch afresh gets wrong."""
    at = datetime.datetime(2026, 1, 2, 3, 4, 5)
    first = pa.table({"id": pa.nulls(3, pa.int64()), "note": pa.nulls(3, pa.string()),
                      "x": [0.5, math.nan, math.inf], "at": [at] * 3,
                      "score": pa.array([0.25, None, -math.inf], pa.float32())}, schema=SCHEMA)
    rest = [pa.table({"id": [3 * k + i for i in range(3)], "note": [f"n{k}{i}" for i in range(3)],
                      "x": [1.0, 2.0, -math.inf], "at": [at] * 3, "score": pa.array([0.5, None, 1.0], pa.float32())},
                     schema=SCHEMA) for k in (1, 2)]
    return [first, *rest]


def rows_of(tables) -> list[dict]:
    """The rows as dicts (compared through str(), where NaN equals NaN)."""
    return [row for t in tables for row in t.to_pylist()]


def strict_json(line: str) -> dict:
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant} in {line}")
    return json.loads(line, parse_constant=refuse)


def test_one_file_keeps_every_columns_type_and_nulls_whatever_the_batches(tmp_path):
    ds = ray.data.from_arrow(blocks())
    summary = write_output(ds, str(tmp_path / "out.parquet"), null_column="score")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.remove_metadata() == SCHEMA
    assert str(table.to_pylist()) == str(rows_of(blocks()))
    assert (summary.rows, summary.null_rows, summary.files) == (9, 3, 1)
    assert write_dataset(ray.data.from_arrow(blocks()), str(tmp_path / "again.parquet")) == 9
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_json_lines_output_is_strict_json_in_input_order(tmp_path):
    write_output(ray.data.from_arrow(blocks()), str(tmp_path / "out.jsonl"))
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    got = [strict_json(line) for line in lines]
    expected = rows_of(blocks())
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    # NaN and the infinities are not JSON: they become null; every finite value reads back the same.
    assert [r["x"] for r in got[:3]] == [0.5, None, None] and [r["score"] for r in got[:3]] == [0.25, None, None]
    assert got[3]["note"] == "n10" and got[0]["at"] == "2026-01-02T03:04:05"


def test_a_folder_gets_many_files_from_the_workers_and_must_be_empty(tmp_path):
    out = tmp_path / "scored"
    summary = write_output(ray.data.from_arrow(blocks()), f"{out}/", null_column="score")
    files = sorted(out.iterdir())
    assert summary.rows == 9 and summary.null_rows == 3 and summary.files == len(files) > 1
    table = pa.concat_tables([pq.read_table(f) for f in files]).sort_by("at")
    read = sorted(table.to_pylist(), key=lambda r: (r["id"] is not None, r["id"] or 0, str(r["x"])))
    want = sorted(rows_of(blocks()), key=lambda r: (r["id"] is not None, r["id"] or 0, str(r["x"])))
    assert str(read) == str(want) and all(pq.read_schema(f).remove_metadata() == SCHEMA for f in files)
    # An existing directory is a folder too; one that holds files is refused before anything runs.
    with pytest.raises(FileExistsError, match=r"output folder .*scored is not empty \(\d+ entries"):
        write_output(ray.data.from_arrow(blocks()), str(out))
    # JSON Lines folders hold the same strict lines as a single file; a URI names a folder.
    write_output(ray.data.from_arrow(blocks()), f"file://{tmp_path}/as-json/", "jsonl")
    write_output(ray.data.from_arrow(blocks()), str(tmp_path / "one.jsonl"))
    lines = [line for f in sorted((tmp_path / "as-json").iterdir()) for line in f.read_text().splitlines()]
    assert sorted(lines) == sorted((tmp_path / "one.jsonl").read_text().splitlines())
    assert all(strict_json(line) for line in lines)


def test_a_failed_write_leaves_no_output(tmp_path):
    def fail_on_the_last_block(batch):
        if 6 in batch["id"].to_pylist():
            raise ValueError("this block cannot be scored")
        return batch

    def failing():
        return ray.data.from_arrow(blocks()).map_batches(fail_on_the_last_block, batch_format="pyarrow")

    for path in (tmp_path / "out.parquet", tmp_path / "out.jsonl"):
        with pytest.raises(Exception, match="this block cannot be scored"):
            write_output(failing(), str(path))
    with pytest.raises(Exception, match="this block cannot be scored"):
        write_output(failing(), f"{tmp_path}/folder/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="this block cannot be scored"):
        write_output(failing(), str(tmp_path / "empty"))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty"]


def test_first_invalid_row_is_counted_across_blocks():
    good = pa.table({"query": ["q"] * 10, "document": [f"d{i}" for i in range(10)]})
    bad = pa.table({"query": ["q"] * 10, "document": [f"d{i}" if i != 7 else None for i in range(10)]})
    numbers = pa.table({"query": ["q"] * 10, "document": list(range(10))})
    assert first_invalid_row(ray.data.from_arrow([good, good, bad, bad]), ["query", "document"]) == (
        27, "document", "a null (missing) value")
    assert first_invalid_row(ray.data.from_arrow([numbers]), ["query", "document"]) == (0, "document", "int: 0")
    assert first_invalid_row(ray.data.from_arrow([good, good]), ["query", "document"]) is None
