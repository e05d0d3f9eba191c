"""Stage files may come from other people: refuse HDF5 features that make a reader touch other files.

HDF5 can point outside the file in three ways, all of which h5py follows silently: external links (a group
member that names another file), virtual datasets (a dataset stitched from other files) and external raw storage
(a dataset whose bytes live in another file, e.g. ``/etc/passwd``). uqseg never writes any of them, so a stage
file holding one is refused before that part of it is read: the top level (root, ``/meta``, the members of
``/cases``) when the file is opened, each case's group when the case is first read or copied.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from uqseg_cli.errors import StoreError

_SAFE_LINKS = (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT)  # soft links cannot leave the file


class UntrustedFileError(StoreError):
    """A stage file that reads other files: the whole run stops (not just the case)."""


def _refuse(path: Path | str, where: str, what: str) -> None:
    raise UntrustedFileError(
        f"{path}: refused: {where} is {what}, which makes HDF5 read other files; uqseg files never hold one "
        "(the file was made by another tool, or crafted)"
    )


def _link_what(group: h5py.Group, name: str) -> str:
    try:
        link = group.get(name, getlink=True)
    except Exception:
        return "a link of an unknown kind"
    if isinstance(link, h5py.ExternalLink):
        return f"an external link to {link.filename!r}"
    return "a link of an unknown kind"


def _check_dataset(ds: h5py.Dataset, path: Path | str, where: str) -> None:
    plist = ds.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        _refuse(path, where, "a virtual dataset")
    if plist.get_external_count() > 0:
        target = plist.get_external(0)[0].decode(errors="replace")
        _refuse(path, where, f"a dataset stored in an external file ({target!r})")


def check_members(group: h5py.Group, path: Path | str) -> None:
    """The direct members of ``group`` (not below): links inside the file, datasets stored in it."""
    base = group.name.rstrip("/")
    for key in group.keys():
        info = group.id.links.get_info(key.encode())
        if info.type not in _SAFE_LINKS:
            _refuse(path, f"{base}/{key}", _link_what(group, key))
        if info.type == h5py.h5l.TYPE_HARD:
            obj = group.get(key)
            if isinstance(obj, h5py.Dataset):
                _check_dataset(obj, path, f"{base}/{key}")


def check_tree(group: h5py.Group, path: Path | str) -> None:
    """``group`` and everything below it (C-level visits: ~20 µs per object)."""
    base = group.name.rstrip("/")
    bad: list[bytes] = []

    def on_link(name: bytes, info) -> int | None:
        if info.type not in _SAFE_LINKS:
            bad.append(name)
            return 1
        return None

    group.id.links.visit(on_link, info=True)
    if bad:
        name = bad[0].decode(errors="replace")
        parent, _, leaf = name.rpartition("/")
        _refuse(path, f"{base}/{name}", _link_what(group[parent] if parent else group, leaf))

    datasets: list[bytes] = []

    def on_object(name: bytes, info) -> None:
        if info.type == h5py.h5o.TYPE_DATASET:
            datasets.append(name)

    h5py.h5o.visit(group.id, on_object, info=True)
    for name in datasets:
        ds = h5py.Dataset(h5py.h5d.open(group.id, name))
        _check_dataset(ds, path, f"{base}/{name.decode(errors='replace')}")


def check_file_top(f: h5py.File, path: Path | str) -> None:
    """The root, ``/meta`` (whole) and the members of ``/cases`` (not yet their contents)."""
    check_members(f, path)
    for name in ("meta", "cases"):
        if name in f and f.id.links.get_info(name.encode()).type == h5py.h5l.TYPE_HARD:
            g = f[name]
            if isinstance(g, h5py.Group):
                (check_tree if name == "meta" else check_members)(g, path)


def check_self_contained(f: h5py.File, path: Path | str) -> None:
    """The whole file (for small files such as one journalled case)."""
    check_tree(f, path)


def _torch_kind(path: Path) -> str:
    """What a file that torch cannot load looks like, in a few words."""
    try:
        head = path.read_bytes()[:512]
    except OSError:
        return "an unreadable file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive that is not a torch file"
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "a binary file of another kind"


def load_torch_file(path: Path | str, what: str, map_location="cpu"):
    """``torch.load(weights_only=True)`` with one-line `InputError`s that say what the file is and what was
    expected; a file carrying pickled code is refused without suggesting ``weights_only=False``."""
    import pickle
    import re
    import warnings

    import torch

    from uqseg_cli.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what.removeprefix('uqseg ')} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files
            return torch.load(path, map_location=map_location, weights_only=True)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # torch raises many types (KeyError: 101 for a text file)
        text = str(exc)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        code_like = ("reduce" in text.lower() or "unsupported class" in text.lower() or "global" in text.lower())
        if isinstance(exc, pickle.UnpicklingError) and (m or (code_like and _torch_kind(path).startswith("a zip"))):
            name = f" ({m.group(1)})" if m else ""
            raise InputError(
                f"{path}: refused: the file carries pickled Python objects{name}, which a {what} never does "
                "(loading it could run code)"
            ) from None
        if isinstance(exc, MemoryError):
            raise
        raise InputError(
            f"{path}: not a {what}: it is {_torch_kind(path)}, expected a torch file written by uqseg"
        ) from None
