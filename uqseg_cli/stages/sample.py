"""Stage ``sample``: MC dropout, deep ensemble and TTA samples of every case of predict.h5, kept as running sums.

Layout written (per case, per method ``<m>``; docs/architecture.md, ``samples.h5``): ``cases/<id>/<m>/sum_p``,
``sum_logp`` float32 ``(K, *spatial)``, ``sum_entropy`` float32 ``(*spatial)``, ``volumes``, ``soft_volumes``,
``overlap_volumes`` float64 ``(T, K)``, ``votes`` uint16 ``(K, *spatial)``, ``samples`` float16 ``(T, K, *spatial)``
with ``keep_samples``; attributes ``spacing`` (case), ``T`` and how the samples were drawn (method). The sampling
itself is ``bayes/sampling.py``; ``--method files`` (external predictions) is ``stages/sample_files.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from uqseg_cli.bayes import sampling
from uqseg_cli.bayes.sampling import METHODS, SamplePlan, check_mc_dropout, mc_dropout_mode, resolve_T
from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.prefetch import Prefetcher
from uqseg_cli.io.runner import run_stage
from uqseg_cli.io.sharding import plan_from_parent, select_part
from uqseg_cli.io.store import StageFile, write_array
from uqseg_cli.models.checkpoint import checkpoint_fingerprint, resolve_members
from uqseg_cli.models.inference import Predictor
from uqseg_cli.stages.base import (
    CaseStageOptions,
    Report,
    StageResult,
    input_or_default,
    option,
    resume_config,
    stage_run,
)
from uqseg_cli.stages.device import apply_threads, resolve_device

STAGE = "sample"
PARENT = ("predict", "predict.h5", "predict file")  # the stage it reads, its default file name, what to call it
LAYOUT = {
    "<method>/<sum>": "sum_p, sum_logp float32 (K, *spatial), sum_entropy float32 (*spatial)",
    "<method>/<volumes>": "volumes, soft_volumes, overlap_volumes float64 (T, K) in ml",
    "<method>/votes": "uint16 (K, *spatial): samples whose argmax is class k",
    "<method>/samples": "float16 (T, K, *spatial): every sample, only with keep_samples",
}
FILES = "files"  # --method files: stages/sample_files.py


@dataclass(kw_only=True)
class SampleOptions(CaseStageOptions):
    """Options of ``sample``. ``models`` empty = the checkpoint recorded in predict.h5; ``methods`` empty = every
    method the checkpoints allow; ``T`` None = 20. ``methods=["files"]`` with ``sources`` (one folder of external
    predictions per sample) runs ``stages/sample_files.py`` instead, with no checkpoint."""

    output: Path = Path("samples.h5")
    models: list[str] = option(factory=list)  # → checkpoint_fingerprints (resolve_checkpoints)
    methods: list[str] = option(factory=list)  # → methods (resolve_methods)
    T: int | None = option(None)  # → T per method (resolve_samples)
    tta_intensity: float = option(0.0, config=True)
    keep_samples: bool = option(False, config=True)
    sources: list[str] = option(factory=list)  # --method files only
    # forward passes per batch change the last bits of the sums (~1e-6): part of the resume config
    batch_size: int = option(8, config=True)
    amp: bool = True  # → amp: float16 autocast, on CUDA only
    seed: int = option(0, config=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.models, self.sources = [str(m) for m in self.models], [str(s) for s in self.sources]
        self.tta_intensity, self.keep_samples = float(self.tta_intensity), bool(self.keep_samples)
        self.batch_size, self.seed, self.amp = int(self.batch_size), int(self.seed), bool(self.amp)
        if self.tta_intensity < 0:
            raise UqsegError(f"--tta-intensity must be >= 0, got {self.tta_intensity}")
        if self.batch_size < 1:
            raise UqsegError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.files:
            if (self.methods or [FILES]) != [FILES] or self.models or self.T is not None:
                raise UqsegError("--method files (with --from) takes one folder per sample and no -m/-T; run "
                                 "checkpoint methods (mcdropout, ensemble, tta) in a separate `uqseg sample`")
            return
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise UqsegError(f"--method {','.join(bad)}: unknown; choose from {', '.join(METHODS)}")
        if self.T is not None and int(self.T) < 1:
            raise UqsegError(f"-T must be >= 1, got {self.T}")
        # one canonical order, so a resume with the same methods given in another order is the same run
        self.methods = [m for m in METHODS if m in self.methods]

    @property
    def files(self) -> bool:
        """External predictions as the samples (``--method files`` or ``--from``)."""
        return FILES in self.methods or bool(self.sources)


def default_checkpoints(pf: StageFile) -> list[str]:
    """Checkpoint(s) recorded in predict.h5's config, resolved next to the file when relative."""
    for key in ("checkpoints", "checkpoint", "model"):
        val = pf.config.get(key)
        if not val:
            continue
        vals = [val] if isinstance(val, str) else [str(v) for v in val]
        out = []
        for v in vals:
            p = Path(v)
            if not p.is_absolute() and not p.exists() and (pf.path.parent / p).exists():
                p = pf.path.parent / p
            out.append(str(p))
        return out
    return []


def resolve_checkpoints(pf: StageFile, models: list[str]) -> list[Path]:
    """The checkpoint files of ``models`` (files, folders, globs; ``seg.member<k>.pt`` siblings join), else of the
    checkpoint predict.h5 records; each once, member 0 first."""
    specs = list(models) or default_checkpoints(pf)
    if not specs:
        raise UqsegError("no checkpoint: pass -m CHECKPOINT (predict.h5 does not record one)")
    paths: list[Path] = []
    for spec in specs:
        for p in resolve_members(spec):
            if p.resolve() not in {q.resolve() for q in paths}:
                paths.append(p)
    return paths


def check_members(paths: list[Path], predictors: list[Predictor]) -> None:
    """Every member must share the first one's input grid, channels, classes and dimensionality; normalisation
    statistics may differ (separately trained checkpoints measure them on their own training data)."""
    ref = predictors[0]

    def grid(pred) -> dict:
        return {k: v for k, v in pred.ckpt.preprocessing.to_dict().items() if k not in ("mean", "std")}

    for p, pred in zip(paths[1:], predictors[1:], strict=True):
        if grid(pred) != grid(ref):
            diff = sorted(k for k in grid(ref) if grid(ref).get(k) != grid(pred).get(k))
            raise InputError(
                f"{p}: preprocessing ({', '.join(diff)}) differs from {paths[0]}; ensemble members must share the "
                "input grid and channels"
            )
        if pred.num_classes != ref.num_classes or pred.model.dims != ref.model.dims:
            raise InputError(
                f"{p}: {pred.num_classes} classes / {pred.model.dims}D, but {paths[0]} has "
                f"{ref.num_classes} classes / {ref.model.dims}D"
            )


def resolve_methods(options: SampleOptions, paths: list[Path], predictors: list[Predictor],
                    report: Report) -> list[str]:
    """The methods to run, in canonical order: those asked (refused when the checkpoints cannot run them), else every
    method the checkpoints allow (the ensemble needs 2 members, MC dropout a dropout layer; skipped with a line)."""
    asked = bool(options.methods)
    chosen = list(options.methods) if asked else list(METHODS)
    if "ensemble" in chosen and len(predictors) < 2:
        if asked:
            raise UqsegError(
                f"--method ensemble needs at least 2 checkpoints, got {len(paths)} ({paths[0]}); "
                "pass several -m, a folder, a glob, or train with --members K"
            )
        report.log("ensemble skipped: only one checkpoint (give -m several checkpoints or train --members K)")
        chosen.remove("ensemble")
    if "mcdropout" in chosen:
        why = check_mc_dropout(predictors[0].model)
        if why:
            if asked:
                raise UqsegError(f"--method mcdropout: {paths[0]}: {why}")
            report.log(f"mcdropout skipped: {paths[0]}: {why}")
            chosen.remove("mcdropout")
    if not chosen:
        raise UqsegError("no sampling method is possible with these checkpoints")
    return chosen


def resolve_samples(methods: list[str], options: SampleOptions, members: int, report: Report) -> dict[str, int]:
    """Samples per method: ``T`` for MC dropout and TTA (TTA capped at its distinct transforms without intensity
    jitter, said in a line), one per member for the ensemble."""
    try:
        T, notes = resolve_T(methods, options.T, members, options.tta_intensity)
    except ValueError as exc:
        raise UqsegError(str(exc)) from None
    for n in notes:
        report.log(n)
    return T


def sample_config(options: SampleOptions, methods: list[str], T: dict[str, int], amp: bool, paths: list[Path],
                  predictors: list[Predictor]) -> dict:
    """The resume config: the options' fields and the resolved methods, T, amp, checkpoints and classes."""
    extra = {}
    if "mcdropout" in methods:
        extra["mcdropout_mode"] = mc_dropout_mode(predictors[0].model)
    return resume_config(
        options,
        methods=methods,
        T=T,
        amp=amp,
        checkpoint_fingerprints=[checkpoint_fingerprint(p) for p in paths],
        class_names=list(predictors[0].ckpt.class_names),
        agreement=1,  # votes + overlap_volumes layout: a resume of an older file is refused, not mixed
        **extra,
    )


def read_case(pf: StageFile, case_id: str) -> tuple:
    """The image and (when predict.h5 holds one) the final segmentation of one case."""
    cv = pf.case(case_id)
    return cv.get("image"), (cv.get("segmentation") if cv.has("segmentation") else None)


def sample_one(pf: StageFile, case_id: str, group, predictors: list[Predictor], plan: SamplePlan,
               train_ids: list[list[str]], ahead: tuple) -> None:
    """Sample one case with every method of ``plan`` into ``group`` (``ahead``: :func:`read_case`'s arrays)."""
    cv = pf.case(case_id)
    K = predictors[0].num_classes
    if cv.has("probabilities") and cv.dataset("probabilities").shape[0] != K:
        raise InputError(
            f"{pf.path}: case {case_id}: predict.h5 has {cv.dataset('probabilities').shape[0]} classes, "
            f"the checkpoint {plan.member_names[0]} has {K}"
        )
    image, seg = ahead
    spacing = cv.spacing
    group.attrs["spacing"] = list(spacing)
    sampling.sample_case(  # looked up at call time: tests interrupt it
        case_id, image, spacing, predictors, plan, group, train_ids=train_ids, write_array=write_array,
        segmentation=seg,
    )


def run(options: SampleOptions, report: Report | None = None) -> StageResult:
    """Sample every case of ``options.input`` (a predict.h5) into ``options.output``."""
    report = report or Report()
    apply_threads(options.threads)
    parent = input_or_default(options.input, *PARENT[1:])
    if options.files:
        from uqseg_cli.stages import sample_files

        files_options = sample_files.SampleFilesOptions(
            input=parent, output=options.output, sources=options.sources, keep_samples=options.keep_samples,
            num_parts=options.num_parts, part_id=options.part_id, overwrite=options.overwrite, device=options.device,
            threads=options.threads,
        )
        return sample_files.run(files_options, report)
    dev = resolve_device(options.device)
    with StageFile(parent, expect_stage=PARENT[0]) as pf:
        case_ids, n_parts, p_id = plan_from_parent(pf, options.num_parts, options.part_id)
        paths = resolve_checkpoints(pf, options.models)
        predictors = [Predictor.from_checkpoint(p, dev, options.batch_size, options.amp) for p in paths]
        check_members(paths, predictors)
        methods = resolve_methods(options, paths, predictors, report)
        T = resolve_samples(methods, options, len(predictors), report)
        amp = bool(options.amp and dev.type == "cuda")
        plan = SamplePlan(
            methods=methods, T=T, seed=options.seed, tta_intensity=options.tta_intensity,
            keep_samples=options.keep_samples, max_batch=options.batch_size, amp=amp,
            member_names=[p.name for p in paths],
        )
        config = sample_config(options, methods, T, amp, paths, predictors)
        if "mcdropout" in methods:
            report.log(
                f"mcdropout: {config['mcdropout_mode']} "
                + ("(encoder once, decoder T times)" if config["mcdropout_mode"] == "cached" else
                   "(dropout inside the encoder: T full passes)")
            )
        train_ids = [list(p.ckpt.train_case_ids) for p in predictors]
        # the next case's arrays are read in a thread while this one samples (io/prefetch.py)
        prefetch = Prefetcher(lambda cid: read_case(pf, cid), select_part(case_ids, n_parts, p_id))
        run = stage_run(
            STAGE, options, report,
            config=config,
            case_ids=case_ids,
            parent=parent,
            part=(n_parts, p_id),
            inputs=[("-m", p) for p in paths],
        )
        report.log(f"sampling {', '.join(f'{m} (T={T[m]})' for m in methods)} for {len(case_ids)} case(s) on {dev}")
        with prefetch:
            result = run_stage(
                run, lambda cid, group: sample_one(pf, cid, group, predictors, plan, train_ids, prefetch.get(cid))
            )
    report.log(f"wrote {result.out}")
    return StageResult.of(result, stage=STAGE, methods=methods, T=T)
