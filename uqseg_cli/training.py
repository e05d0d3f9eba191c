"""The segmentation training loop: data preparation, Dice + cross-entropy, AdamW with a cosine schedule.

2D models train on whole images (or on the axial slices of volumes) resized to the model grid once; the 3D model
trains on random patches (half of them centred on a foreground voxel). Each epoch ends with a validation on the
original grids of the validation cases through `inference.Predictor` (the exact path ``predict`` takes), and the
weights of the epoch with the best mean foreground Dice are kept.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from uqseg_cli.augment import AugmentConfig, augment_batch
from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.inference import Predictor
from uqseg_cli.io.readers import NIFTI_SUFFIXES, Case, file_suffix
from uqseg_cli.metrics.dice import dice_per_class
from uqseg_cli.models.base import SegModel
from uqseg_cli.models.checkpoint import Checkpoint
from uqseg_cli.models.preprocessing import (
    DEFAULT_CT_WINDOW,
    Preprocessing,
    adapt_channels,
    geometry_2d,
    normalise,
    pad_values,
    to_model_2d,
    to_unit,
    value_scale_for,
)
from uqseg_cli.models.registry import create_model, model_info
from uqseg_cli.rng import case_seed

VAL_SPLITS = {"val", "valid", "validation"}
TRAIN_SPLITS = {"train", "training", ""}
STREAM_CACHE_BYTES = 64 << 20  # prepared 2D training samples kept in memory (PH2 fits); the rest are remade when drawn


@dataclass
class TrainOptions:
    """Every option that changes the trained weights (recorded in the checkpoint's ``training`` meta)."""

    arch: str = "unet-small"
    epochs: int = 25
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    dropout: float = 0.2
    dropout_at: str = "head"
    model_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False
    input_size: list[int] | None = None  # 2D model grid (H, W); for the 3D model: the inference tile
    max_side: int = 256  # default 2D grid: longest side scaled to this, rounded up to the size multiple
    resize: str = "stretch"
    modality: str = "auto"
    ct_window: list[float] | None = None
    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    patches_per_volume: int = 8
    halo: int = 16
    empty_slice_fraction: float = 0.2  # volumes under 2D models: empty slices kept, relative to foreground ones
    val_fraction: float = 0.2
    seed: int = 0
    members: int = 1
    folds: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: bool = True  # CUDA only
    class_names: list[str] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = asdict(self.augment)
        return d


@dataclass
class EpochLog:
    """One row of the training log (CSV)."""

    member: int
    fold: int | None
    epoch: int
    lr: float
    train_loss: float
    val_dice: float | None
    seconds: float
    best: bool


@dataclass
class TrainedMember:
    model: SegModel
    meta: Checkpoint
    log: list[EpochLog]


# -- data ---------------------------------------------------------------------------------------------------------
def infer_modality(cases: Sequence[Case]) -> str:
    """``ct`` when any image is a NIfTI file or holds floating-point intensities, else ``photo``."""
    for c in cases:
        if file_suffix(c.source) in NIFTI_SUFFIXES or np.issubdtype(c.image.dtype, np.floating):
            return "ct"
    return "photo"


def data_fingerprint(cases: Sequence[Case]) -> str:
    """sha256 (32 hex digits) of case ids, image and mask bytes, in case-id order."""
    h = hashlib.sha256()
    for c in sorted(cases, key=lambda c: c.id):
        h.update(c.id.encode() + b"\x00")
        h.update(str((c.image.shape, str(c.image.dtype))).encode())
        h.update(np.ascontiguousarray(c.image).tobytes())
        if c.mask is not None:
            h.update(np.ascontiguousarray(c.mask).tobytes())
    return h.hexdigest()[:32]


def default_input_size_2d(shapes: Sequence[Sequence[int]], model: SegModel, max_side: int) -> list[int]:
    """Median (H, W) of the training images scaled so the longer side is at most ``max_side``, rounded to the
    nearest multiple of the model's size multiple (or the model's fixed size). PH2 (288x383) → 192x256."""
    if model.fixed_input_size is not None:
        return list(model.fixed_input_size)
    hw = np.median(np.array([s[-2:] for s in shapes], dtype=float), axis=0)
    s = min(1.0, max_side / hw.max())
    m = model.size_multiple
    return [int(max(m, round(v * s / m) * m)) for v in hw]


def split_train_val(cases: Sequence[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """A manifest ``split`` column wins (``val``/``validation`` → validation, ``train`` or empty → training, other
    values such as ``test`` are left out); otherwise a seeded random ``val_fraction`` of the cases (at least one
    when the fraction is positive and two or more cases exist)."""
    splits = [str(c.meta.get("split", "") or "").strip().lower() for c in cases]
    if any(splits):
        train = [c for c, s in zip(cases, splits, strict=True) if s in TRAIN_SPLITS]
        val = [c for c, s in zip(cases, splits, strict=True) if s in VAL_SPLITS]
        return train, val
    if val_fraction <= 0 or len(cases) < 2:
        return list(cases), []
    n_val = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    order = np.random.default_rng(case_seed(seed, "split", "train")).permutation(len(cases))
    val_idx = set(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in val_idx], [c for i, c in enumerate(cases) if i in val_idx]


def assign_folds(case_ids: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """Seeded split of ``case_ids`` into ``k`` folds of near-equal size (each sorted)."""
    if k < 2 or k > len(case_ids):
        raise UqsegError(f"--folds {k}: need 2 <= folds <= number of training cases ({len(case_ids)})")
    ids = sorted(case_ids)
    order = np.random.default_rng(case_seed(seed, "folds", "train")).permutation(len(ids))
    return [sorted(ids[i] for i in order[f::k]) for f in range(k)]


def make_preprocessing(cases: Sequence[Case], opts: TrainOptions, model: SegModel, channels: int) -> Preprocessing:
    """Preprocessing for these training cases: modality, intensity scaling and window, per-channel mean/std of the
    [0, 1] intensities, model grid (2D) or inference tile (3D)."""
    modality = infer_modality(cases) if opts.modality == "auto" else opts.modality
    window = None
    scale = 1.0
    if modality == "ct":
        window = [float(v) for v in (opts.ct_window or DEFAULT_CT_WINDOW)]
    else:
        scale = value_scale_for(cases[0].image.dtype)
    probe = Preprocessing(modality, channels, [1, 1], opts.resize, scale, window, [0.0] * channels, [1.0] * channels)
    sums = np.zeros(channels)
    sq = np.zeros(channels)
    n = 0
    for c in cases:
        img = adapt_channels(c.image, channels, f"case {c.id}")
        step = max(1, int(np.prod(img.shape[1:]) // 200_000) or 1)
        u = to_unit(img.reshape(channels, -1)[:, ::step], probe).double().numpy()
        sums += u.sum(1)
        sq += (u**2).sum(1)
        n += u.shape[1]
    mean = sums / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 1e-8))
    if model.dims == 3:
        size = list(opts.input_size or [128, 128, 128])
        if not 0 <= opts.halo < min(size) / 2:
            raise UqsegError(
                f"--halo {opts.halo} leaves no core in a {'x'.join(map(str, size))} tile; "
                f"need 0 <= halo < {min(size) / 2:g}"
            )
    else:
        size = list(opts.input_size or default_input_size_2d([c.spatial_shape for c in cases], model, opts.max_side))
    model.check_input((1, channels, *(model.valid_input_size(size) if model.dims == 3 else size)))
    return Preprocessing(
        modality,
        channels,
        [int(v) for v in size],
        opts.resize,
        scale,
        window,
        [float(v) for v in mean],
        [float(max(v, 1e-3)) for v in std],
        int(opts.halo),
    )


def slices_2d(
    cases: Sequence[Case], prep: Preprocessing, empty_fraction: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """All training samples of a 2D model on the model grid: images (M, C, h, w) float16 and labels (M, h, w)
    uint8. Volumes contribute their axial slices: every slice with foreground, and ``empty_fraction`` times as many
    empty ones (drawn with ``rng``)."""
    xs, ys = [], []
    pad = pad_values(prep)
    for c in cases:
        img = adapt_channels(c.image, prep.channels, f"case {c.id}")
        if img.ndim == 3:
            items = [(img, c.mask)]
        else:
            fg = [z for z in range(img.shape[1]) if c.mask[z].any()]
            empty = [z for z in range(img.shape[1]) if not c.mask[z].any()]
            n_empty = min(len(empty), math.ceil(empty_fraction * max(1, len(fg))))
            keep = sorted(fg + list(rng.choice(empty, n_empty, replace=False) if n_empty else []))
            items = [(img[:, z], c.mask[z]) for z in keep]
        for im, m in items:
            x, y = _item_2d(im, m, prep, pad)
            xs.append(x)
            ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def _item_2d(
    im: np.ndarray, m: np.ndarray, prep: Preprocessing, pad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training sample on the model grid: image (C, h, w) float16, labels (h, w) uint8."""
    geo = geometry_2d(im.shape[1:], prep.input_size, prep.resize)
    x = to_model_2d(normalise(im, prep)[None], geo, pad)[0].half()
    lab = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    if tuple(lab.shape[-2:]) != geo.inner:
        lab = F.interpolate(lab, size=geo.inner, mode="nearest-exact")
    full = torch.zeros(1, 1, *geo.model)
    oy, ox = geo.offset
    full[..., oy : oy + geo.inner[0], ox : ox + geo.inner[1]] = lab
    return x, full[0, 0].to(torch.uint8)


class StreamedImages:
    """The training samples of 2D images, made on demand from the cases (which may stay on disk, see
    `uqseg_cli.io.streaming`) instead of all at once: the same values as `slices_2d` for images, with memory bounded
    by ``cache_bytes`` of prepared samples (the first ones made are kept; the rest are remade when drawn)."""

    def __init__(self, cases: Sequence[Case], prep: Preprocessing, cache_bytes: int = STREAM_CACHE_BYTES) -> None:
        self.cases = list(cases)
        self.prep = prep
        self.pad = pad_values(prep)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._held = 0

    def __len__(self) -> int:
        return len(self.cases)

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        c = self.cases[i]
        x, y = _item_2d(adapt_channels(c.image, self.prep.channels, f"case {c.id}"), c.mask, self.prep, self.pad)
        size = x.numel() * x.element_size() + y.numel() * y.element_size()
        if self._held + size <= self.cache_bytes:
            self._cache[i] = (x, y)
            self._held += size
        return x, y

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (n, C, h, w) float32 and labels (n, h, w) int64 of the samples ``idx`` (as ``X[idx].float()``)."""
        items = [self.item(int(i)) for i in idx]
        return torch.stack([x for x, _ in items]).float(), torch.stack([y for _, y in items]).long()


def sample_patches(
    vols: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    n: int,
    patch: Sequence[int],
    pad: torch.Tensor,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random patches (n, C, *patch) and labels (n, *patch) int64 from normalised volumes (C, D, H, W);
    every other patch is centred on a random foreground voxel (when the volume has one). Outside the volume:
    ``pad`` intensities and background labels."""
    C = vols[0].shape[0]
    xs = pad.view(1, C, 1, 1, 1).expand(n, C, *patch).clone()
    ys = torch.zeros(n, *patch, dtype=torch.long)
    for i in range(n):
        v = int(torch.randint(len(vols), (1,), generator=g))
        vol, lab = vols[v], labels[v]
        shape = vol.shape[1:]
        fg = None
        if i % 2 == 0:
            nz = torch.nonzero(lab)
            if len(nz):
                fg = nz[int(torch.randint(len(nz), (1,), generator=g))]
        if fg is None:
            fg = torch.stack([torch.randint(max(1, s), (1,), generator=g)[0] for s in shape])
        starts = [int(c) - p // 2 for c, p in zip(fg, patch, strict=True)]
        src, dst = [], []
        for s0, p, L in zip(starts, patch, shape, strict=True):
            lo, hi = max(0, s0), min(L, s0 + p)
            src.append(slice(lo, hi))
            dst.append(slice(lo - s0, hi - s0))
        xs[(i, slice(None), *dst)] = vol[(slice(None), *src)]
        ys[(i, *dst)] = lab[tuple(src)].long()
    return xs, ys


# -- loss, metric -------------------------------------------------------------------------------------------------
def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice), Dice over the whole batch and averaged over the foreground classes.

    ``logits`` (N, K, *S), ``target`` (N, *S) int64 labels in [0, K)."""
    K = logits.shape[1]
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target, K).movedim(-1, 1).to(p.dtype)
    dims = (0, *range(2, logits.dim()))
    inter = (p * onehot).sum(dims)
    denom = p.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + (1 - dice[1:].mean())


def mean_foreground_dice(seg: np.ndarray, ref: np.ndarray, num_classes: int) -> float:
    """Mean Dice over classes 1..K-1 of one case (DESIGN §5 conventions: both empty = 1)."""
    return float(dice_per_class(seg, ref, num_classes)[1:].mean())


def validate(predictor: Predictor, cases: Sequence[Case]) -> float:
    """Mean over cases of the mean foreground Dice of ``argmax predict_proba`` on the original grid."""
    scores = []
    for c in cases:
        seg = predictor.predict_proba(c.image, c.id).argmax(0).numpy()
        scores.append(mean_foreground_dice(seg, c.mask, predictor.num_classes))
    return float(np.mean(scores))


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# -- the loop -----------------------------------------------------------------------------------------------------
def check_training_cases(cases: Sequence[Case]) -> tuple[int, int, int]:
    """Validate the cases (masks present, same spatial dims and channels). Returns (dims, channels, classes)."""
    if not cases:
        raise InputError("no training cases")
    missing = [c.id for c in cases if c.mask is None]
    if missing:
        raise InputError(f"training needs a mask for every case; missing for {', '.join(missing[:5])} (use --masks)")
    dims = {c.ndim for c in cases}
    if len(dims) > 1:
        raise InputError("training cases mix 2D images and 3D volumes")
    chans = {c.image.shape[0] for c in cases}
    channels = max(chans)
    for c in cases:
        adapt_channels(c.image, channels, f"{c.source} (case {c.id})")
    classes = max(2, max(int(c.mask.max()) for c in cases) + 1)
    return dims.pop(), channels, classes


def train_member(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    opts: TrainOptions,
    member: int,
    device: torch.device,
    num_classes: int,
    channels: int,
    class_names: list[str],
    fold: int | None = None,
    fold_case_ids: Sequence[str] = (),
    fingerprint: str = "",
    on_epoch: Callable[[EpochLog], None] | None = None,
    prep: Preprocessing | None = None,
) -> TrainedMember:
    """Train one model (one ensemble member or one fold) and return it with the best epoch's weights.

    ``prep`` fixes the preprocessing (so that all members share it); by default it is derived from
    ``train_cases`` (`make_preprocessing`)."""
    info = model_info(opts.arch)
    data_dims = train_cases[0].ndim
    if info.dims == 3 and data_dims != 3:
        raise UqsegError(f"model {opts.arch} is 3D; the training cases are 2D images")
    seed = case_seed(opts.seed, f"member{member}", "train")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    kw = dict(opts.model_kwargs)
    if opts.arch == "swin-unet" and opts.input_size and "img_size" not in kw:
        kw["img_size"] = list(opts.input_size)
    probe = create_model(
        opts.arch, channels, num_classes, opts.dropout, pretrained=False, dropout_at=opts.dropout_at, **kw
    )
    if prep is None:
        prep = make_preprocessing(train_cases, opts, probe, channels)
    if opts.arch == "swin-unet" and "img_size" not in kw:
        kw["img_size"] = prep.input_size
    torch.manual_seed(seed)
    model = create_model(
        opts.arch, channels, num_classes, opts.dropout, pretrained=opts.pretrained, dropout_at=opts.dropout_at, **kw
    ).to(device)
    pad = pad_values(prep)
    mean_t, std_t = torch.tensor(prep.mean), torch.tensor(prep.std)
    photo = prep.modality == "photo"

    if info.dims == 2 and all(c.ndim == 2 for c in train_cases):
        # photos: one sample per image, made when drawn (bounded memory; the same batches as the eager path)
        data = StreamedImages(train_cases, prep)
        steps = max(1, len(data) // opts.batch_size)

        def batches():
            order = torch.randperm(len(data), generator=g)
            for b in range(steps):
                yield data.batch(order[b * opts.batch_size : (b + 1) * opts.batch_size])
    elif info.dims == 2:
        X, Y = slices_2d(train_cases, prep, opts.empty_slice_fraction, rng)
        steps = max(1, len(X) // opts.batch_size)

        def batches():
            order = torch.randperm(len(X), generator=g)
            for b in range(steps):
                idx = order[b * opts.batch_size : (b + 1) * opts.batch_size]
                yield X[idx].float(), Y[idx].long()
    else:
        for c in train_cases:
            if c.image.ndim != 4:
                raise InputError(f"case {c.id}: the 3D model needs volumes")
        vols = [normalise(adapt_channels(c.image, channels), prep) for c in train_cases]
        labs = [torch.as_tensor(c.mask.astype(np.int64)) for c in train_cases]
        patch = model.valid_input_size(opts.patch_size)
        steps = max(1, math.ceil(len(vols) * opts.patches_per_volume / opts.batch_size))

        def batches():
            for _ in range(steps):
                yield sample_patches(vols, labs, opts.batch_size, patch, pad, g)

    total = steps * opts.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    warm = int(opts.warmup_fraction * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, total, warm))
    use_amp = opts.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    meta = Checkpoint(
        arch=opts.arch,
        init_args=model.init_args,
        preprocessing=prep,
        class_names=class_names,
        train_case_ids=sorted(c.id for c in train_cases),
        val_case_ids=sorted(c.id for c in val_cases),
        member=member,
        members=opts.folds or opts.members,
        seed=opts.seed,
        fold=fold,
        folds=opts.folds,
        fold_case_ids=sorted(fold_case_ids),
        epochs=opts.epochs,
        data_fingerprint=fingerprint,
        training=opts.to_dict(),
    )
    best_state, best_dice, best_epoch = None, -1.0, 0
    log: list[EpochLog] = []
    for epoch in range(1, opts.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses = []
        lr = opt.param_groups[0]["lr"]
        for x, y in batches():
            x, y = augment_batch(x, y, mean_t, std_t, photo, opts.augment, g)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
            loss = dice_ce_loss(logits.float(), y)
            if not torch.isfinite(loss):
                raise UqsegError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower --lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(loss.item())
        val = None
        if val_cases:
            val = validate(Predictor(model, meta, device, batch_size=max(8, opts.batch_size), amp=use_amp), val_cases)
        score = val if val is not None else float(epoch)  # without validation: keep the last epoch
        is_best = score > best_dice
        if is_best:
            best_state = copy.deepcopy(model.state_dict())
            best_dice, best_epoch = score, epoch
        row = EpochLog(member, fold, epoch, lr, float(np.mean(losses)), val, time.perf_counter() - t0, is_best)
        log.append(row)
        if on_epoch is not None:
            on_epoch(row)
    model.load_state_dict(best_state)
    model.eval()
    meta.best_epoch = best_epoch
    meta.val_dice = best_dice if val_cases else None
    return TrainedMember(model.cpu(), meta, log)


def plan_members(
    cases: Sequence[Case], opts: TrainOptions
) -> list[tuple[int, int | None, list[Case], list[Case], list[str]]]:
    """What each member trains on: ``(member, fold, train_cases, val_cases, held_out_ids)``.

    Ensembles (``members`` K): the same train/validation split for all, different seeds. Folds (``folds`` K):
    member k leaves fold k out completely; its validation part is drawn from the remaining cases."""
    if opts.folds:
        usable, _ = (
            split_train_val(cases, 0.0, opts.seed)
            if not any(c.meta.get("split") for c in cases)
            else ([c for c in cases if str(c.meta.get("split", "")).lower() not in VAL_SPLITS | {"test"}], [])
        )
        folds = assign_folds([c.id for c in usable], opts.folds, opts.seed)
        plan = []
        for k, held in enumerate(folds):
            rest = [c for c in usable if c.id not in set(held)]
            tr, va = split_train_val([_without_split(c) for c in rest], opts.val_fraction, opts.seed + k)
            plan.append((k, k, tr, va, held))
        return plan
    tr, va = split_train_val(cases, opts.val_fraction, opts.seed)
    if not tr:
        raise InputError("no training cases left after the validation split")
    return [(m, None, tr, va, []) for m in range(opts.members)]


def _without_split(c: Case) -> Case:
    if "split" not in c.meta:
        return c
    if hasattr(c, "with_meta"):  # a StreamedCase stays on disk
        return c.with_meta({k: v for k, v in c.meta.items() if k != "split"})
    return Case(c.id, c.image, c.spacing, c.mask, c.raters, c.source, {k: v for k, v in c.meta.items() if k != "split"})


def train_members(
    cases: Sequence[Case],
    opts: TrainOptions,
    device: torch.device,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> Iterator[TrainedMember]:
    """Train every member of `plan_members` in turn (yielding each as soon as it is done). All members share
    one preprocessing, computed from the intensities of every case that any member trains on."""
    dims, channels, num_classes = check_training_cases(cases)
    default = (
        ["background", "foreground"]
        if num_classes == 2
        else ["background"] + [f"class{k}" for k in range(1, num_classes)]
    )
    names = list(opts.class_names or default)
    if len(names) != num_classes:
        raise UqsegError(
            f"--class-names gives {len(names)} names; the masks hold {num_classes} classes (0..{num_classes - 1})"
        )
    plan = plan_members(cases, opts)
    kw = dict(opts.model_kwargs)
    if opts.arch == "swin-unet" and opts.input_size and "img_size" not in kw:
        kw["img_size"] = list(opts.input_size)
    probe = create_model(opts.arch, channels, num_classes, opts.dropout, dropout_at=opts.dropout_at, **kw)
    seen = {c.id: c for _, _, tr, _, _ in plan for c in tr}
    prep = make_preprocessing([seen[k] for k in sorted(seen)], opts, probe, channels)
    fingerprint = data_fingerprint(cases)
    for member, fold, tr, va, held in plan:
        yield train_member(
            tr, va, opts, member, device, num_classes, channels, names, fold, held, fingerprint, on_epoch, prep
        )
