"""The output service: one ROOT file per job, TTrees written with uproot, atomic on success.

* Trees are real TTrees (``mktree``/``extend``; never uproot's dict assignment, which writes an
  RNTuple), compressed with ZSTD (default) or LZ4 — uproot's default ZLIB is ~15x slower.
* Rows are buffered and written in large baskets, so the file does not depend on the batch size.
* The file is written under a temporary name and renamed when the job finalizes successfully;
  a failed or killed job never leaves a file under the requested name.
* Provenance (effective options, seed, event range, versions, model hashes) and the counters are
  stored as JSON strings (TObjString) in the ``flashsim`` directory; ``flashsim provenance FILE``
  prints them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import ConfigurationError

FLUSH_ROWS = 200_000


def _compression(spec: str):
    import uproot

    algo, _, level = spec.partition(":")
    algo = algo.upper()
    table = {"ZSTD": uproot.ZSTD, "LZ4": uproot.LZ4, "ZLIB": uproot.ZLIB, "LZMA": uproot.LZMA}
    if algo == "NONE":
        return None
    if algo not in table:
        raise ConfigurationError(f"ApplicationMgr.Compression: unknown algorithm {spec!r} (ZSTD:1, LZ4:1, ZLIB:1, LZMA:1, NONE)")
    return table[algo](int(level or 1))


class NtupleHandle:
    """Rows for one TTree; ``extend`` once per batch with a dict of equal-length arrays."""

    def __init__(self, svc: "OutputSvc", tree: str, requester: str):
        self.svc = svc
        self.tree = tree
        self.requester = requester
        self._pending: list[dict] = []
        self.rows = 0

    def extend(self, columns: dict):
        cols = {k: np.asarray(v) for k, v in columns.items()}
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{self.requester}: tree {self.tree}: columns of different lengths {lengths}")
        self._pending.append(cols)

    # called by the application manager around execute
    def commit(self):
        for cols in self._pending:
            self.svc._append(self.tree, cols)
        self._pending.clear()

    def discard(self):
        self._pending.clear()


class OutputSvc:
    def __init__(self, filename: str | None, compression: str = "ZSTD:1"):
        self.filename = filename or None
        self.compression_spec = compression
        self.compression = _compression(compression)
        self.handles: dict[str, NtupleHandle] = {}
        self._buffers: dict[str, list[dict]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._types: dict[str, dict] = {}
        self._file = None
        self._trees = {}
        self.tmpname = None
        self.rows_written: dict[str, int] = {}
        self.metadata: dict[str, str] = {}

    def ntuple(self, tree: str, requester: str = "?") -> NtupleHandle:
        if not self.filename:
            raise ConfigurationError(
                f"{requester} writes the TTree '{tree}' but no output file is configured "
                "(set ApplicationMgr.Output or pass -o FILE.root)")
        handle = self.handles.get(tree)
        if handle is None:
            handle = self.handles[tree] = NtupleHandle(self, tree, requester)
        elif handle.requester != requester:
            raise ConfigurationError(f"TTree '{tree}' is written by both {handle.requester} and {requester}")
        return handle

    def put_metadata(self, key: str, text: str):
        """A string stored as ``flashsim/<key>`` (TObjString) when the file is closed."""
        self.metadata[key] = text

    # -- writing -------------------------------------------------------------------------------
    def _open(self):
        import uproot

        target = Path(self.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.tmpname = str(target.with_name(f".{target.name}.part-{os.getpid()}"))
        self._file = uproot.recreate(self.tmpname, compression=self.compression)

    def _append(self, tree: str, cols: dict):
        types = {k: (v.dtype if v.ndim == 1 else np.dtype((v.dtype, v.shape[1:]))) for k, v in cols.items()}
        known = self._types.get(tree)
        if known is None:
            self._types[tree] = types
        elif list(known) != list(types):
            raise ValueError(f"tree {tree}: branches changed from {list(known)} to {list(types)}")
        self._buffers.setdefault(tree, []).append(cols)
        n = len(next(iter(cols.values()))) if cols else 0
        self._buffered_rows[tree] = self._buffered_rows.get(tree, 0) + n
        if self._buffered_rows[tree] >= FLUSH_ROWS:
            self._flush(tree)

    def _flush(self, tree: str):
        parts = self._buffers.get(tree)
        if not parts:
            return
        if self._file is None:
            self._open()
        types = self._types[tree]
        if tree not in self._trees:
            self._trees[tree] = self._file.mktree(tree, {k: v for k, v in types.items()})
        data = {k: np.concatenate([p[k] for p in parts]).astype(types[k].base if types[k].shape else types[k], copy=False)
                for k in types}
        n = len(next(iter(data.values()))) if data else 0
        if n:
            self._trees[tree].extend(data)
        self.rows_written[tree] = self.rows_written.get(tree, 0) + n
        self._buffers[tree] = []
        self._buffered_rows[tree] = 0

    def close(self, success: bool, provenance: dict | None = None, counters: dict | None = None) -> str | None:
        """Flush, write provenance, rename on success; remove the partial file on failure."""
        if not self.filename:
            return None
        if not success:
            self.abort()
            return None
        for tree in list(self._buffers):
            self._flush(tree)
        if self._file is None:
            self._open()
        for tree, types in self._types.items():  # trees declared but never filled still exist
            if tree not in self._trees:
                self._trees[tree] = self._file.mktree(tree, dict(types))
        if provenance is not None:
            self._file["flashsim/Provenance"] = json.dumps(provenance, indent=1, default=str)
        if counters is not None:
            self._file["flashsim/Counters"] = json.dumps(counters, indent=1, default=str)
        for key, text in self.metadata.items():
            self._file[f"flashsim/{key}"] = text
        self._file.close()
        self._file = None
        os.replace(self.tmpname, self.filename)
        return self.filename

    def abort(self):
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
        if self.tmpname and os.path.exists(self.tmpname):
            os.remove(self.tmpname)


def read_provenance(filename: str) -> dict:
    import uproot

    try:
        with uproot.open(filename) as f:
            prov = json.loads(str(f["flashsim/Provenance"]))
            if "flashsim/Counters" in f:
                prov["counters"] = json.loads(str(f["flashsim/Counters"]))
            return prov
    except FileNotFoundError:
        raise ConfigurationError(f"{filename}: no such file") from None
    except KeyError:
        raise ConfigurationError(f"{filename}: no flashsim provenance in this file") from None
