"""The HDF5 stage files (schema ``uqseg/1``): writing helpers and a read-only view that follows lineage.

Layout (DESIGN §3): root attributes ``schema, stage, uqseg_version, config (JSON), parent, parent_fingerprint,
fingerprint, num_parts, part_id``; ``/meta/case_ids`` (all cases of the run) and ``/meta/failed``; one group per
case ``/cases/<id>`` whose attribute ``complete`` is written last.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from uqseg_cli import SCHEMA, __version__
from uqseg_cli.errors import StoreError

STR = h5py.string_dtype()
# gzip level of every stage array (byte shuffle on). Measured on ISIC stage files (benchmarks/bench_compression.py,
# docs/benchmarks.md): level 1 writes 12-15 % faster than 4 for 1-4 % more bytes, 9 is 2-3x slower for 1-3 % fewer;
# lzf is faster still but only h5py reads it (other HDF5 tools lack the filter), so gzip stays.
GZIP_LEVEL = 1


def write_array(
    group: h5py.Group, name: str, data: np.ndarray, dtype: Any = None, compress: bool = True
) -> h5py.Dataset:
    """Write ``data`` as a chunked, compressed dataset (replacing an existing one of that name)."""
    arr = np.asarray(data if dtype is None else np.asarray(data).astype(dtype, copy=False))
    if name in group:
        del group[name]
    if arr.ndim == 0 or arr.size < 64 or not compress:
        return group.create_dataset(name, data=arr)
    # ~1 MiB chunks along the leading axes keep random access cheap and compression effective
    return group.create_dataset(
        name,
        data=arr,
        chunks=_chunks(arr.shape, arr.dtype.itemsize),
        compression="gzip",
        compression_opts=GZIP_LEVEL,
        shuffle=True,
    )


def _chunks(shape: tuple[int, ...], itemsize: int, target: int = 1 << 20) -> tuple[int, ...]:
    chunks = list(shape)
    i = 0
    while int(np.prod(chunks)) * itemsize > target and i < len(chunks):
        excess = int(np.prod(chunks)) * itemsize / target
        chunks[i] = max(1, int(chunks[i] / excess) if chunks[i] > excess else 1)
        i += 1
    return tuple(max(1, c) for c in chunks)


def fingerprint(stage: str, config: dict, parent_fingerprint: str, case_ids: Sequence[str]) -> str:
    """A content identity for a stage output: what produced it (stage, config, parent) and for which cases."""
    h = hashlib.sha256()
    h.update(json.dumps([SCHEMA, stage, config, parent_fingerprint, list(case_ids)], sort_keys=True).encode())
    return h.hexdigest()[:32]


def config_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def config_diff(old: dict, new: dict) -> list[str]:
    """Names of options that differ between two configs, as ``name: old -> new`` (with the CLI option for
    input identities, e.g. ``input (-i/--input): 'a' -> 'b'``)."""
    from uqseg_cli.io.fingerprint import OPTION_NAMES

    keys = sorted(set(old) | set(new))
    return [
        f"{k}{f' ({OPTION_NAMES[k]})' if k in OPTION_NAMES and OPTION_NAMES[k] != k else ''}: "
        f"{old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def write_root(
    f: h5py.File,
    *,
    stage: str,
    config: dict,
    parent: str,
    parent_fp: str,
    case_ids: Sequence[str],
    num_parts: int,
    part_id: int,
    failed: dict[str, str] | None = None,
    done_ids: Sequence[str] = (),
) -> None:
    """Write the root attributes and ``/meta`` of a stage file."""
    f.attrs["schema"] = SCHEMA
    f.attrs["stage"] = stage
    f.attrs["uqseg_version"] = __version__
    f.attrs["config"] = config_json(config)
    f.attrs["parent"] = parent
    f.attrs["parent_fingerprint"] = parent_fp
    f.attrs["fingerprint"] = fingerprint(stage, json.loads(config_json(config)), parent_fp, list(done_ids))
    f.attrs["num_parts"] = int(num_parts)
    f.attrs["part_id"] = int(part_id)
    meta = f.require_group("meta")
    for name in ("case_ids", "failed"):
        if name in meta:
            del meta[name]
    meta.create_dataset("case_ids", data=np.array(list(case_ids), dtype=object), dtype=STR)
    # JSON pairs: case ids may themselves hold ": " (older files hold "case: reason", still read)
    items = [json.dumps([k, v]) for k, v in sorted((failed or {}).items())]
    meta.create_dataset("failed", data=np.array(items, dtype=object), dtype=STR)


def parse_failed(item: str) -> tuple[str, str]:
    """One ``/meta/failed`` entry: a JSON ``[case, reason]`` pair, or the older ``"case: reason"``."""
    if item.startswith("["):
        try:
            k, v = json.loads(item)
            return str(k), str(v)
        except (ValueError, TypeError):
            pass
    k, _, v = item.partition(": ")
    return k, v


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO":
        return [x.decode() if isinstance(x, bytes) else x for x in v.tolist()]
    if isinstance(v, np.generic):
        return v.item()
    return v


class CaseView:
    """One case of a stage file. ``get``/``attr``/``has`` look in this file first, then up the lineage."""

    def __init__(self, stagefile: StageFile, case_id: str):
        self.file = stagefile
        self.id = case_id

    def _group(self, sf: StageFile) -> h5py.Group | None:
        g = sf.h5.get(f"cases/{self.id}")
        if not isinstance(g, h5py.Group):
            return None
        sf.check_case(self.id)
        return g

    def _chain(self) -> Iterable[StageFile]:
        sf: StageFile | None = self.file
        while sf is not None:
            yield sf
            sf = sf.parent

    def has(self, name: str) -> bool:
        return any((g := self._group(sf)) is not None and name in g for sf in self._chain())

    def dataset(self, name: str) -> h5py.Dataset:
        for sf in self._chain():
            g = self._group(sf)
            if g is not None and name in g and isinstance(g[name], h5py.Dataset):
                return g[name]
        raise StoreError(f"{self.file.path}: case {self.id} has no array {name!r} (nor has any parent file)")

    def get(self, name: str) -> np.ndarray:
        """The whole array ``name`` (e.g. ``"image"``, ``"tta/sum_p"``) as numpy."""
        return self.dataset(name)[()]

    def attr(self, name: str, default: Any = KeyError) -> Any:
        for sf in self._chain():
            g = self._group(sf)
            if g is not None and name in g.attrs:
                return _decode(g.attrs[name])
        if default is KeyError:
            raise StoreError(f"{self.file.path}: case {self.id} has no attribute {name!r}")
        return default

    def keys(self, sub: str = "") -> list[str]:
        """Names directly below this case's group (or ``sub`` within it) in this file only."""
        g = self._group(self.file)
        if g is not None and sub:
            g = g.get(sub)
        return sorted(g.keys()) if isinstance(g, h5py.Group) else []

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.atleast_1d(self.attr("spacing")))


class StageFile:
    """Read-only view of a stage output. ``parent`` opens the file it was made from (relative to this one)."""

    def __init__(self, path: Path | str, expect_stage: str | Sequence[str] | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: file not found")
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, expected a uqseg HDF5 file")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError:
            raise StoreError(
                f"{self.path}: not a readable HDF5 file: it is {_file_kind(self.path)}, expected a uqseg stage file"
            ) from None
        try:
            self._read_root(expect_stage)
        except BaseException:
            self.h5.close()
            raise
        self._stat = _stat_key(self.path)
        self._parent: StageFile | None = None
        self._parent_loaded = False
        self._checked: set[str] = set()
        if expect_stage is not None:  # a stage reading its input: every ancestor checked before any case
            try:
                self.verify_lineage()
            except BaseException:
                self.close()
                raise

    def verify_lineage(self) -> None:
        """Check every ancestor present on disk against the fingerprint its child recorded (`StoreError` if one
        changed); a missing ancestor is reported only when a case needs it."""
        sf: StageFile | None = self
        while sf is not None:
            pp = sf.parent_path
            if pp is None or not pp.exists():
                return
            sf = sf.parent

    def _read_root(self, expect_stage: str | Sequence[str] | None) -> None:
        from uqseg_cli.io.untrusted import check_file_top

        schema = _decode(self.h5.attrs.get("schema"))
        if schema != SCHEMA:
            what = f"schema {schema!r}" if schema is not None else "no uqseg schema attribute"
            raise StoreError(
                f"{self.path}: an HDF5 file of another kind ({what}), expected a uqseg stage file "
                f"(schema {SCHEMA!r}, made by uqseg predict/sample/uncertainty)"
            )
        stage = _decode(self.h5.attrs.get("stage"))
        if not isinstance(stage, str) or not stage:
            raise StoreError(f"{self.path}: damaged uqseg file: no 'stage' attribute")
        self.stage: str = stage
        if expect_stage is not None:
            allowed = [expect_stage] if isinstance(expect_stage, str) else list(expect_stage)
            if self.stage not in allowed:
                raise StoreError(f"{self.path}: is a {self.stage!r} file, expected {' or '.join(allowed)}")
        check_file_top(self.h5, self.path)
        try:
            config = json.loads(_decode(self.h5.attrs.get("config", "{}")))
        except (TypeError, ValueError):
            raise StoreError(f"{self.path}: damaged uqseg file: its 'config' attribute is not JSON") from None
        if not isinstance(config, dict):
            raise StoreError(f"{self.path}: damaged uqseg file: its 'config' attribute is not a JSON object")
        self.config: dict = config
        self.fingerprint: str = str(_decode(self.h5.attrs.get("fingerprint", "")))
        cases = self.h5.get("cases")
        if cases is not None and not isinstance(cases, h5py.Group):
            raise StoreError(f"{self.path}: damaged uqseg file: '/cases' is not a group")

    def check_case(self, case_id: str) -> None:
        """Refuse a case group that reads other files (external links, virtual or external datasets)."""
        if case_id not in self._checked:
            from uqseg_cli.io.untrusted import check_tree

            g = self.h5.get(f"cases/{case_id}")
            if isinstance(g, h5py.Group):
                check_tree(g, self.path)
            self._checked.add(case_id)

    def unchanged(self) -> bool:
        """Whether the file on disk is still the one opened (same inode, size and modification time)."""
        return _stat_key(self.path) == self._stat

    # lineage
    @property
    def parent_path(self) -> Path | None:
        rel = _decode(self.h5.attrs.get("parent", ""))
        if not rel:
            return None
        p = Path(rel)
        return p if p.is_absolute() else Path(os.path.normpath(self.path.parent / p))

    def _verify_parent(self, parent: StageFile, pp: Path) -> None:
        want = _decode(self.h5.attrs.get("parent_fingerprint", ""))
        if want and parent.fingerprint != want:
            raise StoreError(
                f"{self.path}: its parent {pp} has changed since this file was written "
                f"(fingerprint {parent.fingerprint[:8]} != {want[:8]}); rerun this stage"
            )

    @property
    def parent(self) -> StageFile | None:
        """The parent file, checked against the fingerprint recorded here on first use and again whenever the
        file on disk has been replaced since (so no case of a long run is read from another parent)."""
        if self._parent_loaded:
            if self._parent is not None and not self._parent.unchanged():
                pp = self._parent.path
                if not pp.exists():
                    raise StoreError(f"{self.path}: its parent file {pp} was removed during the run")
                with StageFile(pp) as now:
                    self._verify_parent(now, pp)
                    if now.fingerprint != self._parent.fingerprint:
                        raise StoreError(f"{self.path}: its parent {pp} was replaced during the run; rerun")
                self._parent._stat = _stat_key(pp)
            return self._parent
        pp = self.parent_path
        if pp is not None:
            if not pp.exists():
                raise StoreError(f"{self.path}: its parent file {pp} is missing (moved or deleted?)")
            parent = StageFile(pp)
            try:
                self._verify_parent(parent, pp)
            except StoreError:
                parent.close()
                raise
            self._parent = parent
        self._parent_loaded = True
        return self._parent

    def upstream(self, stage: str) -> StageFile:
        """This file or the nearest ancestor of the given stage."""
        sf: StageFile | None = self
        while sf is not None:
            if sf.stage == stage:
                return sf
            sf = sf.parent
        raise StoreError(f"{self.path}: no {stage!r} file in its lineage")

    def lineage(self) -> list[StageFile]:
        out, sf = [], self
        while sf is not None:
            out.append(sf)
            sf = sf.parent
        return out

    # cases
    @property
    def case_ids(self) -> list[str]:
        """Ids of the complete cases, sorted."""
        g = self.h5.get("cases")
        if not isinstance(g, h5py.Group):
            return []
        return sorted(k for k in g.keys() if bool(g[k].attrs.get("complete", False)))

    @property
    def incomplete_ids(self) -> list[str]:
        g = self.h5.get("cases")
        if not isinstance(g, h5py.Group):
            return []
        return sorted(k for k in g.keys() if not bool(g[k].attrs.get("complete", False)))

    @property
    def all_case_ids(self) -> list[str]:
        return _decode(self.h5["meta/case_ids"][()]) if "meta/case_ids" in self.h5 else self.case_ids

    @property
    def failed(self) -> dict[str, str]:
        if "meta/failed" not in self.h5:
            return {}
        return dict(parse_failed(s) for s in _decode(self.h5["meta/failed"][()]))

    @property
    def num_parts(self) -> int:
        return int(self.h5.attrs.get("num_parts", 1))

    @property
    def part_id(self) -> int:
        return int(self.h5.attrs.get("part_id", 0))

    def case(self, case_id: str) -> CaseView:
        if case_id not in self.h5.get("cases", {}):
            raise StoreError(f"{self.path}: no case {case_id!r}")
        self.check_case(case_id)
        return CaseView(self, case_id)

    def cases(self) -> Iterable[CaseView]:
        for cid in self.case_ids:
            yield CaseView(self, cid)

    def close(self) -> None:
        if self._parent is not None:
            self._parent.close()
        try:
            self.h5.close()
        except Exception:
            pass

    def __enter__(self) -> StageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stat_key(path: Path) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _file_kind(path: Path) -> str:
    try:
        head = path.read_bytes()[:8] if path.stat().st_size < 1 << 20 else open(path, "rb").read(8)
    except OSError:
        return "unreadable"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a torch checkpoint?)"
    if head.startswith(b"\x89HDF"):
        return "a damaged or truncated HDF5 file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "a file of another kind"


def relpath(target: Path, start_dir: Path) -> str:
    """Path of ``target`` relative to ``start_dir`` (absolute if on another drive/root)."""
    try:
        return os.path.relpath(Path(target).resolve(), Path(start_dir).resolve())
    except ValueError:
        return str(Path(target).resolve())
