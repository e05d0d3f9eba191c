"""Stage ``export``: maps of any stage file written for viewers, NIfTI on the source affine and PNG overlays.

Unlike the other stages it writes no HDF5: ``LAYOUT`` lists the files written under the output folder (the file
writing itself is io/export.py). A map is any per-case array of the input file or its lineage, and
``<method>/mean_probabilities`` (Σp / T) where samples.h5's running sums are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqseg_cli.errors import UqsegError
from uqseg_cli.io.store import CaseView, StageFile
from uqseg_cli.progress import Progress, warn
from uqseg_cli.stages.base import Report, StageResult, option

STAGE = "export"
INPUTS = ("uncertainty.h5", "predict.h5")  # tried in this order when no input is given
FORMATS = ("auto", "nifti", "png", "both")
RAW_SUMS = ("sum_p", "sum_logp", "sum_entropy", "samples", "volumes", "soft_volumes")
MEAN_P = "mean_probabilities"
LAYOUT = {
    "<case>/<map>.nii.gz": "the map on the source image's affine (``tta/entropy`` → ``tta_entropy``); channel "
    "maps as 4D (x, y, z, C)",
    "<case>/<map>.png": "2D cases: overlay on the image at its resolution (label maps in class colours, other maps "
    "as a heat map on a fixed scale)",
}


@dataclass(kw_only=True)
class ExportOptions:
    """Options of ``export``; ``maps`` empty = the case's own maps and the segmentation, ``cases`` empty = all."""

    input: Path | None = None  # None: uncertainty.h5, else predict.h5, in the current folder
    output: Path = Path("export")
    maps: list[str] = option(factory=list)
    cases: list[str] = option(factory=list)
    format: str = option("auto")
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UqsegError(f"--format {self.format!r}: choose from {', '.join(FORMATS)}")
        if self.input is not None:
            self.input = Path(self.input)
        self.output = Path(self.output)

    @property
    def nifti(self) -> bool:
        return self.format in ("nifti", "both", "auto")

    def wants_image(self, spatial_ndim: int) -> bool:
        """Whether PNG overlays (and so the image under them) are written for a case of this many dims."""
        return self.format in ("png", "both") or (self.format == "auto" and spatial_ndim == 2)


def find_input(path: Path | None) -> Path:
    """The given input (refused when missing), else uncertainty.h5 or predict.h5 in the current folder."""
    if path is not None:
        if not path.exists():
            raise UqsegError(f"{path}: input not found")
        return path
    for name in INPUTS:
        if Path(name).exists():
            return Path(name)
    raise UqsegError("no -i given and neither uncertainty.h5 nor predict.h5 is in this folder")


def available_maps(cv: CaseView, spatial: tuple[int, ...]) -> list[str]:
    """Maps held by the case in this file (not its parents): datasets on the case grid, and
    ``<method>/mean_probabilities`` where running sums are stored."""
    import h5py

    group = cv.file.h5[f"cases/{cv.id}"]
    names: list[str] = []

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "sum_p":
            names.append(name[: -len("sum_p")] + MEAN_P)
        elif leaf not in RAW_SUMS and obj.ndim in (len(spatial), len(spatial) + 1) and \
                tuple(obj.shape[-len(spatial):]) == spatial:
            names.append(name)

    group.visititems(visit)
    return names


def has_map(cv: CaseView, name: str) -> bool:
    return cv.has(name) or (name.endswith(MEAN_P) and cv.has(name[: -len(MEAN_P)] + "sum_p"))


def read_map(cv: CaseView, name: str) -> np.ndarray:
    """The array of a map name (following the lineage); ``<m>/mean_probabilities`` = Σp / T."""
    if name.endswith(MEAN_P) and not cv.has(name):
        ds = cv.dataset(f"{name[: -len(MEAN_P)]}sum_p")
        return ds[()] / np.float32(int(ds.parent.attrs["T"]))
    return cv.get(name)


def select_cases(sf: StageFile, src: Path, wanted: list[str]) -> list[str]:
    """The complete cases to export (``wanted``, each checked, or all); refuses none."""
    ids = sf.case_ids
    if wanted:
        missing = [c for c in wanted if c not in ids]
        if missing:
            raise UqsegError(f"{src}: no complete case(s) {', '.join(missing[:5])}")
        ids = wanted
    if not ids:
        raise UqsegError(f"{src}: no complete cases to export")
    return ids


def case_grid(cv: CaseView, src: Path) -> tuple[int, ...]:
    """The spatial shape of the case: that of its segmentation (in the file or its lineage)."""
    if not cv.has("segmentation"):
        raise UqsegError(f"{src}: case {cv.id} has no segmentation in its lineage to fix the grid")
    return tuple(int(s) for s in np.shape(read_map(cv, "segmentation")))


def case_affine(cv: CaseView) -> tuple[np.ndarray, bool]:
    """The source affine of the case, and whether the file recorded it (older files: spacing-only affine)."""
    from uqseg_cli.io.geometry import spacing_affine

    affine = cv.attr("affine", None)
    recorded = affine is not None
    if not recorded:
        affine = spacing_affine(cv.spacing)
    return np.asarray(affine, dtype=np.float64), recorded


def read_checked_map(cv: CaseView, src: Path, name: str, spatial: tuple[int, ...]) -> np.ndarray:
    """The map ``name`` of the case, refused (one line naming what is there) when absent or off the case grid."""
    if not has_map(cv, name):
        raise UqsegError(f"{src}: case {cv.id} has no map {name!r} (available: "
                         f"{', '.join(['segmentation', *available_maps(cv, spatial)])})")
    arr = read_map(cv, name)
    if tuple(np.shape(arr)[-len(spatial):]) != spatial:
        raise UqsegError(f"{src}: case {cv.id}: {name} of shape {np.shape(arr)} is not a map on the "
                         f"case grid {spatial}")
    return arr


def export_case(cv: CaseView, src: Path, options: ExportOptions) -> tuple[list[str], bool]:
    """Write the maps of one case under ``<output>/<case>/``; returns the files written and whether the case
    had a recorded affine."""
    from uqseg_cli.io.export import map_file_name, overlay_png, save_nifti

    spatial = case_grid(cv, src)
    names = options.maps or list(dict.fromkeys(["segmentation", *available_maps(cv, spatial)]))
    affine, recorded = case_affine(cv)
    K = int(cv.dataset("probabilities").shape[0]) if cv.has("probabilities") else 2
    image = cv.get("image") if options.wants_image(len(spatial)) else None
    written: list[str] = []
    for name in names:
        arr = read_checked_map(cv, src, name, spatial)
        stem = options.output / cv.id / map_file_name(name)
        if options.nifti:
            written.append(str(save_nifti(arr, affine, len(spatial), stem.with_name(stem.name + ".nii.gz"))))
        if len(spatial) == 2 and image is not None and name != "image":
            written.append(str(overlay_png(image, name, arr, K, stem.with_name(stem.name + ".png"))))
        elif options.format == "png" and len(spatial) != 2:
            raise UqsegError(f"{src}: case {cv.id} is 3D; PNG overlays are for 2D cases (use --format nifti)")
    return written, recorded


def run(options: ExportOptions, report: Report | None = None) -> StageResult:
    """Export the maps of every chosen case of ``options.input`` into the folder ``options.output``."""
    report = report or Report()
    src = find_input(options.input)
    out = options.output
    if out.exists() and any(out.iterdir()) and not options.overwrite:
        raise UqsegError(f"{out}: exists and is not empty (pass --overwrite to write into it)")
    written: list[str] = []
    no_affine: list[str] = []
    with StageFile(src) as sf:
        ids = select_cases(sf, src, options.cases)
        with Progress(len(ids), STAGE, quiet=report.quiet) as prog:
            for cid in ids:
                files, recorded = export_case(sf.case(cid), src, options)
                written += files
                no_affine += [] if recorded else [cid]
                prog.advance(cid)
    if no_affine:
        warn(f"{src}: {len(no_affine)} case(s) have no recorded affine (file made before uqseg kept it): written "
             "with a spacing-only affine; rerun predict/import to overlay on a rotated or shifted source")
    report.log(f"wrote {len(written)} file(s) for {len(ids)} case(s) under {out}")
    return StageResult(out=out, done=list(ids), summary={"input": str(src), "cases": len(ids), "files": written})
