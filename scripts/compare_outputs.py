"""Compare two run folders file by file: CSV and JSON text byte for byte, every HDF5 dataset bit for bit (and its
attributes), every tensor of the ``.pt`` checkpoints exactly. Used to show a refactor changes no output:

    python scripts/compare_outputs.py before/ after/ [--ignore-attr created --ignore-attr uqseg_version]

Exit 0 when everything compares equal, 1 otherwise (each difference on its own line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

VOLATILE_ATTRS = {"created", "uqseg_version", "started", "finished", "hostname", "elapsed_s"}
VOLATILE_JSON = {"elapsed_s", "seconds", "wall_s", "created"}
VOLATILE_CSV_COLUMNS = {"seconds", "elapsed_s", "wall_s"}


def _volatile(key: str) -> bool:
    """File identities (hashes of bytes, paths and modification times) and clocks differ between two runs."""
    return key in VOLATILE_JSON or key.endswith(("fingerprint", "fingerprints", "sha256"))


def _strip(x):
    """JSON value without its volatile keys (also inside JSON strings, e.g. a checkpoint's ``meta``)."""
    if isinstance(x, str) and x[:1] in "{[":
        try:
            return _strip(json.loads(x))
        except ValueError:
            return x
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not _volatile(k)}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _attrs(obj, ignore: set[str]) -> dict:
    out = {}
    for k, v in obj.attrs.items():
        if k in ignore or _volatile(k):
            continue
        out[k] = _strip(v.tolist() if isinstance(v, np.ndarray) else v)
    return out


def _attr_diffs(file: str, name: str, oa, ob, ignore: set[str]) -> list[str]:
    xa, xb = _attrs(oa, ignore), _attrs(ob, ignore)
    return [f"{file}: {name}: attribute {k!r} differs" for k in sorted(set(xa) | set(xb)) if xa.get(k) != xb.get(k)]


def compare_h5(a: Path, b: Path, ignore: set[str]) -> list[str]:
    diffs: list[str] = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a: dict[str, object] = {}
        names_b: dict[str, object] = {}
        fa.visititems(lambda n, o: names_a.__setitem__(n, o))
        fb.visititems(lambda n, o: names_b.__setitem__(n, o))
        for n in sorted(set(names_a) ^ set(names_b)):
            diffs.append(f"{a.name}: {n} only in {'before' if n in names_a else 'after'}")
        diffs += _attr_diffs(a.name, "/", fa, fb, ignore)
        for n in sorted(set(names_a) & set(names_b)):
            oa, ob = names_a[n], names_b[n]
            diffs += _attr_diffs(a.name, n, oa, ob, ignore)
            if isinstance(oa, h5py.Dataset):
                xa, xb = oa[()], ob[()]
                if isinstance(xa, np.ndarray) and xa.dtype == object:
                    same = xa.tolist() == xb.tolist()
                elif isinstance(xa, np.ndarray):
                    same = xa.dtype == xb.dtype and xa.shape == xb.shape and xa.tobytes() == xb.tobytes()
                else:
                    same = xa == xb
                if not same:
                    diffs.append(f"{a.name}: {n}: values differ")
    return diffs


def compare_pt(a: Path, b: Path) -> list[str]:
    import torch

    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)

    def flat(x, prefix=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from flat(v, f"{prefix}{k}/")
        elif isinstance(x, list | tuple):
            for i, v in enumerate(x):
                yield from flat(v, f"{prefix}{i}/")
        else:
            yield prefix, x

    fa, fb = dict(flat(sa)), dict(flat(sb))
    diffs = [f"{a.name}: {k} only in one" for k in sorted(set(fa) ^ set(fb))]
    for k in sorted(set(fa) & set(fb)):
        x, y = fa[k], fb[k]
        if isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)):
                diffs.append(f"{a.name}: {k}: tensor differs")
        elif not _volatile(k.rstrip("/").split("/")[-1]) and _strip(x) != _strip(y):
            diffs.append(f"{a.name}: {k}: {x!r} != {y!r}")
    return diffs


def compare_csv(a: Path, b: Path, rel: Path) -> list[str]:
    """Byte for byte, except the columns that hold clock times."""
    if a.read_bytes() == b.read_bytes():
        return []
    import pandas as pd

    da, db = pd.read_csv(a, dtype=str), pd.read_csv(b, dtype=str)
    drop = [c for c in da.columns if c in VOLATILE_CSV_COLUMNS]
    if drop and list(da.columns) == list(db.columns) and da.drop(columns=drop).equals(db.drop(columns=drop)):
        return []
    return [f"{rel}: bytes differ"]


def compare_json(a: Path, b: Path) -> list[str]:
    ja, jb = _strip(json.loads(a.read_text())), _strip(json.loads(b.read_text()))
    return [] if ja == jb else [f"{a.name}: JSON differs"]


def compare_dirs(before: Path, after: Path, ignore: set[str]) -> tuple[list[str], int]:
    diffs: list[str] = []
    files_a = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    files_b = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    for p in sorted(files_a ^ files_b):
        diffs.append(f"{p}: only {'before' if p in files_a else 'after'}")
    n = 0
    for rel in sorted(files_a & files_b):
        a, b = before / rel, after / rel
        suffix = a.suffix.lower()
        if suffix == ".h5":
            d = compare_h5(a, b, ignore)
        elif suffix == ".pt":
            d = compare_pt(a, b)
        elif suffix == ".json":
            d = compare_json(a, b)
        elif suffix == ".csv":
            d = compare_csv(a, b, rel)
        elif suffix in (".txt", ".tsv"):
            d = [] if a.read_bytes() == b.read_bytes() else [f"{rel}: bytes differ"]
        else:
            continue  # images and HTML embed renderer versions and timestamps
        n += 1
        diffs.extend(f"{rel.parent}/{x}" if str(rel.parent) != "." else x for x in d)
    return diffs, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--ignore-attr", action="append", default=[], help="HDF5 attribute to skip (repeatable)")
    args = ap.parse_args()
    diffs, n = compare_dirs(args.before, args.after, VOLATILE_ATTRS | set(args.ignore_attr))
    for d in diffs:
        print(d)
    print(f"{n} file(s) compared, {len(diffs)} difference(s)", file=sys.stderr)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
