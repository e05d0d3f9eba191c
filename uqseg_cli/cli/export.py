"""`uqseg export`: maps of any stage file as NIfTI on the source affine, and 2D overlays as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import JsonOut, Overwrite, Quiet, emit_json
from uqseg_cli.errors import UqsegError
from uqseg_cli.parsing import split_list
from uqseg_cli.progress import Progress, log, warn

FORMATS = ("auto", "nifti", "png", "both")
RAW_SUMS = ("sum_p", "sum_logp", "sum_entropy", "samples", "volumes", "soft_volumes")


def _default_input(path: Path | None) -> Path:
    if path is not None:
        if not path.exists():
            raise UqsegError(f"{path}: input not found")
        return path
    for name in ("uncertainty.h5", "predict.h5"):
        if Path(name).exists():
            return Path(name)
    raise UqsegError("no -i given and neither uncertainty.h5 nor predict.h5 is in this folder")


def available_maps(cv, spatial: tuple[int, ...]) -> list[str]:
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
            names.append(name[: -len("sum_p")] + "mean_probabilities")
        elif leaf not in RAW_SUMS and obj.ndim in (len(spatial), len(spatial) + 1) and \
                tuple(obj.shape[-len(spatial):]) == spatial:
            names.append(name)

    group.visititems(visit)
    return names


def read_map(cv, name: str):
    """The array of a map name (following the lineage); ``<m>/mean_probabilities`` = Σp / T."""
    import numpy as np

    if name.endswith("mean_probabilities") and not cv.has(name):
        method = name[: -len("mean_probabilities")]
        ds = cv.dataset(f"{method}sum_p")
        return ds[()] / np.float32(int(ds.parent.attrs["T"]))
    return cv.get(name)


def export(
    input: Annotated[
        Path | None,
        typer.Option("-i", "--input", help="Any stage file: predict.h5, samples.h5, uncertainty.h5, explain/gradcam-"
                     "*.h5 (default: uncertainty.h5, else predict.h5)."),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder: <out>/<case>/<map>.nii.gz|.png.")] = (
        Path("export")
    ),
    maps: Annotated[
        list[str] | None,
        typer.Option("--map", help="Maps to write (comma list or repeat), e.g. segmentation,probabilities,"
                     "tta/entropy,gradcam; any array of the file or its parents (default: the file's own maps "
                     "and the segmentation)."),
    ] = None,
    cases: Annotated[
        list[str] | None, typer.Option("--cases", help="Only these case ids (comma list or repeat).")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="auto (NIfTI, plus PNG overlays for 2D cases), nifti, png (2D only) or both."),
    ] = "auto",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Write maps as NIfTI on the affine of the source image, so that they overlay the original image exactly in
    3D Slicer, ITK-SNAP or napari, and 2D overlays as PNG (label maps in class colours; uncertainty on a fixed
    scale: entropy and mutual information 0..ln K nats, probabilities and confidence 0..1).

    Files made before the affine was recorded get a spacing-only affine (with a warning).

    Examples:
      uqseg export                                            # uncertainty.h5 -> export/<case>/*.nii.gz
      uqseg export -i predict.h5 --map segmentation,probabilities -o viewer/
      uqseg export -i uncertainty.h5 --map tta/entropy,segmentation --cases case01
      uqseg export -i explain/gradcam-lower.h5 --map gradcam --format both
    """
    import numpy as np

    from uqseg_cli.io.export import map_file_name, overlay_png, save_nifti
    from uqseg_cli.io.geometry import spacing_affine
    from uqseg_cli.io.store import StageFile

    if fmt not in FORMATS:
        raise UqsegError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    src = _default_input(input)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise UqsegError(f"{output}: exists and is not empty (pass --overwrite to write into it)")
    written: list[str] = []
    old_file = []
    with StageFile(src) as sf:
        ids = sf.case_ids
        want = split_list(cases)
        if want:
            missing = [c for c in want if c not in ids]
            if missing:
                raise UqsegError(f"{src}: no complete case(s) {', '.join(missing[:5])}")
            ids = want
        if not ids:
            raise UqsegError(f"{src}: no complete cases to export")
        asked = split_list(maps)
        prog = Progress(len(ids), "export", quiet=quiet)
        try:
            for cid in ids:
                cv = sf.case(cid)
                seg_name = "segmentation" if cv.has("segmentation") else None
                ref = read_map(cv, seg_name) if seg_name else None
                if ref is None:
                    raise UqsegError(f"{src}: case {cid} has no segmentation in its lineage to fix the grid")
                spatial = tuple(int(s) for s in np.shape(ref))
                names = asked or list(dict.fromkeys(["segmentation", *available_maps(cv, spatial)]))
                affine = cv.attr("affine", None)
                if affine is None:
                    affine = spacing_affine(cv.spacing)
                    old_file.append(cid)
                affine = np.asarray(affine, dtype=np.float64)
                K = int(cv.dataset("probabilities").shape[0]) if cv.has("probabilities") else 2
                image = cv.get("image") if (fmt in ("png", "both") or (fmt == "auto" and len(spatial) == 2)) \
                    else None
                for name in names:
                    if not (cv.has(name) or (name.endswith("mean_probabilities")
                                             and cv.has(name[: -len("mean_probabilities")] + "sum_p"))):
                        raise UqsegError(f"{src}: case {cid} has no map {name!r} (available: "
                                         f"{', '.join(['segmentation', *available_maps(cv, spatial)])})")
                    arr = read_map(cv, name)
                    if tuple(np.shape(arr)[-len(spatial):]) != spatial:
                        raise UqsegError(f"{src}: case {cid}: {name} of shape {np.shape(arr)} is not a map on the "
                                         f"case grid {spatial}")
                    stem = output / cid / map_file_name(name)
                    if fmt in ("nifti", "both", "auto"):
                        nii = stem.with_name(stem.name + ".nii.gz")
                        written.append(str(save_nifti(arr, affine, len(spatial), nii)))
                    if len(spatial) == 2 and image is not None and name != "image":
                        written.append(str(overlay_png(image, name, arr, K, stem.with_name(stem.name + ".png"))))
                    elif fmt == "png" and len(spatial) != 2:
                        raise UqsegError(f"{src}: case {cid} is 3D; PNG overlays are for 2D cases (use --format "
                                         "nifti)")
                prog.advance(cid)
        finally:
            prog.close()
    if old_file:
        warn(f"{src}: {len(old_file)} case(s) have no recorded affine (file made before uqseg kept it): written "
             "with a spacing-only affine; rerun predict/import to overlay on a rotated or shifted source")
    log(f"wrote {len(written)} file(s) for {len(ids)} case(s) under {output}", quiet)
    if as_json:
        emit_json({"input": str(src), "output": str(output), "cases": len(ids), "files": written})


def register(app: typer.Typer) -> None:
    app.command("export")(export)
