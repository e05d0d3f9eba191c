"""The segmentation training loop: Dice + cross-entropy, AdamW with a cosine schedule, best-epoch selection.

2D models train on whole images (or on the axial slices of volumes) resized to the model grid once; the 3D model
trains on random patches (`training.data`). Each epoch ends with a validation on the original grids of the
validation cases through `models.inference.Predictor` (the exact path ``predict`` takes), and the weights of the
epoch with the best mean foreground Dice are kept.
"""


from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.readers import Case, value_scale_for
from uqseg_cli.metrics.overlap import mean_foreground_dice
from uqseg_cli.models.base import SegModel
from uqseg_cli.models.checkpoint import Checkpoint
from uqseg_cli.models.inference import Predictor
from uqseg_cli.models.preprocessing import (
    DEFAULT_CT_WINDOW,
    Preprocessing,
    adapt_channels,
    normalise,
    pad_values,
    to_unit,
)
from uqseg_cli.models.registry import create_model, model_info
from uqseg_cli.rng import case_seed
from uqseg_cli.training.augment import AugmentConfig, augment_batch
from uqseg_cli.training.data import (
    VAL_SPLITS,
    StreamedImages,
    assign_folds,
    check_training_cases,
    data_fingerprint,
    default_input_size_2d,
    infer_modality,
    sample_patches,
    slices_2d,
    split_train_val,
    without_split,
)


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
            tr, va = split_train_val([without_split(c) for c in rest], opts.val_fraction, opts.seed + k)
            plan.append((k, k, tr, va, held))
        return plan
    tr, va = split_train_val(cases, opts.val_fraction, opts.seed)
    if not tr:
        raise InputError("no training cases left after the validation split")
    return [(m, None, tr, va, []) for m in range(opts.members)]


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
