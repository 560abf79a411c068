"""Folder outputs: Ray's write tasks write the files, from the workers, through Ray's file-datasink
machinery (path and filesystem resolution for local folders and URIs, one deterministically named file
per write task, so a retried task rewrites its own file).

The files are the bytes the single-file writer would write for the same rows (rows.json_lines: strict,
lossless JSON; Parquet with the batch's schema), which Ray's write_json (pandas' to_json: 10 decimals,
so float32 values do not read back exactly) would not give. Each write task also counts the nulls of
one column, so the job can say how many invalid rows it wrote.
"""
from __future__ import annotations

import uuid

from .rows import WriteSummary, json_lines, null_count

_EXTENSIONS = {"parquet": "parquet", "jsonl": "jsonl"}


def _sink_class():
    from ray.data.datasource import BlockBasedFileDatasink

    class FolderSink(BlockBasedFileDatasink):
        """Writes each block to one Parquet or JSON Lines file; write() returns (rows, nulls, files)."""

        def __init__(self, path: str, fmt: str, null_column: str | None, prefix: str):
            super().__init__(path, file_format=_EXTENSIONS[fmt], dataset_uuid=prefix)
            self.fmt, self.null_column, self.prefix = fmt, null_column, prefix

        def write_block_to_file(self, block, file):
            table = block.to_arrow()
            if self.fmt == "parquet":
                import pyarrow.parquet as pq
                pq.write_table(table.replace_schema_metadata(None), file)
            else:
                file.write(json_lines(table))

        def write(self, blocks, ctx):
            blocks = list(blocks)
            super().write(blocks, ctx)
            tables = [_arrow(b) for b in blocks]
            rows = sum(t.num_rows for t in tables)
            return rows, sum(null_count(t, self.null_column) for t in tables), int(rows > 0)

        def on_write_complete(self, write_result):
            self.totals = [sum(r[i] for r in write_result.write_returns) for i in range(3)]
            super().on_write_complete(write_result)

        def on_write_failed(self, error):
            remove_written(self.filesystem, self.path, self.prefix, self.has_created_dir)

    return FolderSink


def _arrow(block):
    from ray.data.block import BlockAccessor
    return BlockAccessor.for_block(block).to_arrow()


def remove_written(filesystem, folder: str, prefix: str, remove_folder: bool) -> None:
    """Deletes the files of one write (their names start with `prefix`), and the folder if the write
    created it and it is empty now."""
    from pyarrow.fs import FileSelector, FileType
    try:
        infos = filesystem.get_file_info(FileSelector(folder, allow_not_found=True))
        for info in infos:
            if info.type == FileType.File and info.base_name.startswith(prefix):
                filesystem.delete_file(info.path)
        if remove_folder and not filesystem.get_file_info(FileSelector(folder, allow_not_found=True)):
            filesystem.delete_dir(folder)
    except OSError:  # best effort: the error that stopped the job is the one to report
        pass


def write_folder(ds, path: str, fmt: str, *, null_column: str | None = None) -> WriteSummary:
    """Writes `ds` as many files under the folder `path` from Ray's write tasks. The folder must be
    absent or empty: files of an earlier run beside the new ones would read as one dataset."""
    from pyarrow.fs import FileSelector
    prefix = f"part-{uuid.uuid4().hex[:12]}"
    sink = _sink_class()(path, fmt, null_column, prefix)
    existing = sink.filesystem.get_file_info(FileSelector(sink.path, allow_not_found=True))
    if existing:
        raise FileExistsError(f"output folder {path} is not empty ({len(existing)} entries, e.g. "
                              f"{existing[0].base_name!r}); name a new or empty folder")
    ds.write_datasink(sink)
    rows, nulls, files = getattr(sink, "totals", (0, 0, 0))
    return WriteSummary(rows, nulls, files, path)
