"""Find the cases of a run: a single file, a folder, a folder of case folders, or a CSV manifest.

* file: one case, id = file stem (``.nii.gz`` handled);
* folder of images: one case per supported file; ``--masks DIR`` / ``--raters DIR ...`` matched by case id;
* folder of case folders (QUBIQ style ``caseNN/image.nii.gz``): one case per sub-folder, the image is the file
  named ``image.*``; ``--masks`` / ``--raters`` may then be file *names* looked up inside each case folder;
* CSV manifest: columns ``case,image[,mask][,rater1,...][,split]``, relative paths relative to the manifest;
* nnU-Net raw layout (``imagesTr/<case>_0000.nii.gz`` + ``_0001`` … channels, ``labelsTr/<case>.nii.gz`` as the
  masks unless ``--masks`` is given; see ``io/nnunet.py``).

Case ids are returned sorted; duplicates and missing files are one-line errors naming the file and case.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uqseg_cli.errors import InputError
from uqseg_cli.io.nnunet import raw_layout, stack_channels
from uqseg_cli.io.readers import ALL_SUFFIXES, Case, case_id_of, file_suffix, read_image, read_mask
from uqseg_cli.parsing import split_list


@dataclass(frozen=True)
class CaseSpec:
    """Where one case's files are. ``raters`` may be empty; ``split`` comes from a manifest column."""

    id: str
    image: Path
    mask: Path | None = None
    raters: tuple[Path, ...] = field(default_factory=tuple)
    split: str | None = None
    channels: tuple[Path, ...] = field(default_factory=tuple)  # nnU-Net _0001, _0002 ... (image is _0000)


def split_paths(values: Sequence[str | Path] | None) -> list[Path]:
    """Accept repeated options and comma-separated lists alike: ``--raters a,b --raters c``."""
    return [Path(p) for p in split_list(values, unique=False)]


MAX_ID_BYTES = 200  # a case id names files (journal, figures): keep room for suffixes under the 255-byte limit


def validate_case_id(case_id: str, where: str) -> str:
    """Refuse ids that cannot be (part of) a file name: empty, ``.``/``..``, ``/`` or ``\\``, control characters
    (newline, tab, NUL), surrounding spaces, or longer than 200 bytes."""
    why = ""
    if not case_id:
        why = "empty"
    elif case_id in {".", ".."}:
        why = "'.' and '..' name folders"
    elif "/" in case_id or "\\" in case_id:
        why = "holds '/' or '\\'"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in case_id):
        why = "holds a control character (newline, tab, NUL)"
    elif case_id != case_id.strip():
        why = "has surrounding spaces"
    elif len(case_id.encode("utf-8", errors="surrogatepass")) > MAX_ID_BYTES:
        why = f"longer than {MAX_ID_BYTES} bytes"
    if why:
        raise InputError(f"{where}: invalid case id {case_id!r} ({why}); case ids name files")
    return case_id


def _image_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and file_suffix(p) in ALL_SUFFIXES:
            cid = case_id_of(p)
            if cid in found:
                raise InputError(f"{folder}: case {cid!r} appears twice ({found[cid].name}, {p.name})")
            found[cid] = p
    return found


def _match(folder: Path, ids: Sequence[str], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: {what} folder not found")
    files = _image_files(folder)
    missing = [c for c in ids if c not in files]
    if missing:
        raise InputError(
            f"{folder}: no {what} for case(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return {c: files[c] for c in ids}


def _read_manifest(path: Path) -> list[CaseSpec]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a UTF-8 BOM (Excel) is not part of 'case'
            reader = csv.DictReader(fh)
            if reader.fieldnames:
                reader.fieldnames = [(c or "").strip() for c in reader.fieldnames]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read manifest: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if not rows:
        raise InputError(f"{path}: manifest has no rows")
    cols = list(rows[0].keys())
    if "case" not in cols or "image" not in cols:
        raise InputError(
            f"{path}: manifest needs columns 'case' and 'image' (found {', '.join(map(str, cols))})"
        )
    rater_cols = sorted((c for c in cols if c and c.startswith("rater")), key=lambda c: (len(c), c))
    base = path.parent

    def resolve(v: str | None) -> Path | None:
        if v is None or not v.strip():
            return None
        p = Path(v.strip())
        return p if p.is_absolute() else base / p

    specs = []
    for i, row in enumerate(rows, start=2):
        cid = validate_case_id((row.get("case") or "").strip(), f"{path} line {i}")
        image = resolve(row.get("image"))
        if image is None:
            raise InputError(f"{path} line {i} (case {cid}): empty 'image'")
        raters = tuple(r for r in (resolve(row.get(c)) for c in rater_cols) if r is not None)
        split = (row.get("split") or "").strip() or None
        specs.append(CaseSpec(cid, image, resolve(row.get("mask")), raters, split))
    return specs


def discover_cases(
    input: Path | str,
    masks: Path | str | None = None,
    raters: Sequence[Path | str] | None = None,
) -> list[CaseSpec]:
    """The cases found at ``input``, sorted by id. See the module docstring for the layouts."""
    src = Path(input)
    rater_paths = split_paths(raters)
    mask_path = Path(masks) if masks is not None else None
    if not src.exists():
        raise InputError(f"{src}: input not found")
    if src.is_file() and src.suffix.lower() == ".csv":
        specs = _read_manifest(src)
        if mask_path is not None or rater_paths:
            ids = [s.id for s in specs]
            mm = _match(mask_path, ids, "mask") if mask_path is not None else {}
            rr = [_match(r, ids, "rater mask") for r in rater_paths]
            specs = [
                CaseSpec(s.id, s.image, mm.get(s.id, s.mask), tuple(r[s.id] for r in rr) or s.raters, s.split)
                for s in specs
            ]
    elif (raw := raw_layout(src)) is not None:
        ids = sorted(raw.images)
        mask_path = mask_path if mask_path is not None else raw.labels
        mm = _match(mask_path, ids, "mask") if mask_path is not None else {}
        rr = [_match(r, ids, "rater mask") for r in rater_paths]
        specs = [
            CaseSpec(c, raw.images[c][0], mm.get(c), tuple(r[c] for r in rr), None, raw.images[c][1:]) for c in ids
        ]
    elif src.is_file():
        cid = validate_case_id(case_id_of(src), str(src))
        if file_suffix(src) not in ALL_SUFFIXES:
            raise InputError(f"{src}: unsupported file type {file_suffix(src)!r}")
        m = None
        if mask_path is not None:
            m = mask_path if mask_path.is_file() else _match(mask_path, [cid], "mask")[cid]
        rr = tuple(r if r.is_file() else _match(r, [cid], "rater mask")[cid] for r in rater_paths)
        specs = [CaseSpec(cid, src, m, rr)]
    else:
        files = _image_files(src)
        if files:
            ids = sorted(files)
            mm = _match(mask_path, ids, "mask") if mask_path is not None else {}
            rr = [_match(r, ids, "rater mask") for r in rater_paths]
            specs = [CaseSpec(c, files[c], mm.get(c), tuple(r[c] for r in rr)) for c in ids]
        else:
            specs = _case_folders(src, mask_path, rater_paths)
    if not specs:
        raise InputError(f"{src}: no images found (supported: {', '.join(ALL_SUFFIXES)}, or a .csv manifest)")
    ids = [s.id for s in specs]
    dup = sorted({c for c in ids if ids.count(c) > 1})
    if dup:
        raise InputError(f"{src}: duplicate case id(s) {', '.join(dup)}")
    return sorted(specs, key=lambda s: s.id)


def _case_folders(src: Path, mask: Path | None, raters: list[Path]) -> list[CaseSpec]:
    specs = []
    for sub in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = [
            p
            for p in sub.iterdir()
            if p.is_file() and case_id_of(p) == "image" and file_suffix(p) in ALL_SUFFIXES
        ]
        if not images:
            continue
        if len(images) > 1:
            raise InputError(f"{sub}: several image.* files ({', '.join(p.name for p in images)})")
        cid = validate_case_id(sub.name, str(sub))

        def inside(p: Path, what: str, sub=sub, cid=cid) -> Path:
            if p.is_dir():
                return _match(p, [cid], what)[cid]
            q = sub / p.name
            if not q.exists():
                raise InputError(f"{q} (case {cid}): {what} not found")
            return q

        m = inside(mask, "mask") if mask is not None else None
        specs.append(CaseSpec(cid, images[0], m, tuple(inside(r, "rater mask") for r in raters)))
    return specs


def load_case(spec: CaseSpec, nan_policy: str = "error", class_names: list[str] | None = None) -> Case:
    """Read a case's image and (optional) reference and rater masks, validating shapes, non-finite voxels
    (``nan_policy``) and mask labels (against ``class_names`` when known)."""
    image, spacing = read_image(spec.image, spec.id, nan_policy=nan_policy)
    if spec.channels:
        image = stack_channels(image, spacing, spec.channels, spec.id,
                               lambda p, c: read_image(p, c, nan_policy=nan_policy))
    shape = image.shape[1:]
    mask = read_mask(spec.mask, shape, spec.id, class_names) if spec.mask is not None else None
    raters = None
    if spec.raters:
        raters = np.stack([read_mask(r, shape, spec.id, class_names) for r in spec.raters])
    return Case(
        spec.id, image, spacing, mask, raters, str(spec.image), {"split": spec.split} if spec.split else {}
    )
