"""Grad-CAM (Selvaraju et al., ICCV 2017) for scalar regressors such as the quality model.

Our own short implementation (no pytorch-grad-cam / OpenCV dependency): a forward hook on one layer,
channel weights = spatial mean of the gradient, map = ReLU(sum_c weight_c * activation_c), resized to
the input grid.

For a regressor ``y = f(x)`` the target is the output itself (``direction="high"``: pixels that push the
predicted Dice up) or its negative (``direction="low"``: pixels that pull it down). Works for 2D inputs
``(N, C, H, W)`` and 3D inputs ``(N, C, D, H, W)`` alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uqseg_cli.errors import UqsegError
from uqseg_cli.parsing import split_list

DIRECTIONS = ("high", "low")
CAM_METHODS = ("gradcam", "hirescam")

_POOLING = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


def _first_tensor(out) -> torch.Tensor | None:
    """The tensor a module returned (first element of a tuple/list, e.g. timm feature lists), else None."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[-1], torch.Tensor):
        return out[-1]
    return None


def spatial_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Named submodules whose output is a spatial feature map for input ``x``, in the order they finish.

    A candidate returns a tensor with the input's number of dimensions (``(N, C, *spatial)``) and is not an
    adaptive pooling layer. The order is that of the forward hooks firing, i.e. a container comes after its
    children. Returns ``[(name, output_shape), ...]``; runs one forward pass without gradients.
    """
    found: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if not name or isinstance(module, _POOLING):
            continue

        def hook(mod, inp, out, name=name):
            t = _first_tensor(out)
            if t is not None and t.ndim == x.ndim and t.shape[0] == x.shape[0]:
                found.append((name, tuple(t.shape)))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The layer Grad-CAM uses when none is given: the last convolutional stage of the model.

    ``model.gradcam_layer`` (a submodule name) wins when the model defines it. Otherwise it is the last module
    (by forward completion order) whose output is still a spatial map larger than 1 voxel, which for a CNN
    regressor ``features -> pool -> head`` is the output of the last convolutional stage.
    """
    hint = getattr(model, "gradcam_layer", None)
    if isinstance(hint, str) and hint:
        return hint
    cands = spatial_layers(model, x)
    big = [name for name, shape in cands if int(np.prod(shape[2:])) > 1]
    pool = big or [name for name, _ in cands]
    if not pool:
        raise UqsegError(
            f"Grad-CAM: {type(model).__name__} has no layer with a spatial output for an input of shape "
            f"{tuple(x.shape)}; pass --layer"
        )
    return pool[-1]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name raises a one-line error listing a few valid ones."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        convs = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        hint = ", ".join(convs[-5:]) if convs else ", ".join(list(modules)[-5:])
        raise UqsegError(f"--layer {name!r}: no such module in {type(model).__name__} (e.g. {hint})")
    return modules[name]


@dataclass
class CamResult:
    """Grad-CAM of one batch.

    cam: ``(N, *spatial)`` float32 >= 0, resized to the input's spatial shape (units: activation x gradient,
        not normalised; see :func:`normalize_map`). output: ``(N,)`` the model's scalar output per input.
    layer: the layer name used; layer_shape: its activation shape ``(N, C, *feature_spatial)``.
    """

    cam: torch.Tensor
    output: torch.Tensor
    layer: str
    layer_shape: tuple[int, ...]


def _scalar_output(out) -> torch.Tensor:
    t = _first_tensor(out) if not isinstance(out, torch.Tensor) else out
    if t is None:
        raise UqsegError("Grad-CAM: the model returned no tensor")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise UqsegError(f"Grad-CAM: expected one scalar output per input, got shape {tuple(t.shape)}")
    return t


def cam_from_activations(
    activations: torch.Tensor, gradients: torch.Tensor, method: str = "gradcam"
) -> torch.Tensor:
    """Class-activation map from one layer's activations and the target's gradients w.r.t. them.

    activations, gradients: ``(N, C, *s)``. ``method="gradcam"`` returns
    ``ReLU(sum_c mean_s(grad_c) * act_c)``; ``method="hirescam"`` (Draelos & Carin 2020) returns
    ``ReLU(sum_c grad_c * act_c)`` (element-wise, so a map never spreads to places whose activations do not
    reach the output). Shape ``(N, *s)``.
    """
    if activations.shape != gradients.shape:
        raise ValueError(
            f"activations {tuple(activations.shape)} and gradients {tuple(gradients.shape)} differ"
        )
    if method == "hirescam":
        return torch.relu((gradients * activations).sum(dim=1))
    if method != "gradcam":
        raise UqsegError(f"--cam {method!r}: expected one of {', '.join(CAM_METHODS)}")
    spatial = tuple(range(2, activations.ndim))
    weights = gradients.mean(dim=spatial, keepdim=True)  # (N, C, 1, ...)
    return torch.relu((weights * activations).sum(dim=1))


def resize_map(cam: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize ``(N, *s)`` maps to ``(N, *size)`` (bi-/trilinear, ``align_corners=False``), clamped at 0."""
    if tuple(cam.shape[1:]) == tuple(size):
        return cam
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    out = F.interpolate(cam[:, None].float(), size=tuple(size), mode=mode, align_corners=False)[:, 0]
    return out.clamp_min(0)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None = None,
    direction: str = "high",
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    method: str = "gradcam",
) -> CamResult:
    """Grad-CAM of a scalar regressor for a batch.

    model: an ``nn.Module`` (put in eval mode by the caller); x: ``(N, C, H, W)`` or ``(N, C, D, H, W)``;
    layer: submodule name (default :func:`default_layer`); direction: ``"high"`` (target = output) or
    ``"low"`` (target = -output); forward: how to get the output from ``x`` (default ``model(x)``).
    Each input's map depends only on its own output (the target is the sum of per-input outputs, and
    inputs do not interact in eval mode). method: ``"gradcam"`` or ``"hirescam"`` (see
    :func:`cam_from_activations`). Returns :class:`CamResult` with ``cam`` ``(N, *x.shape[2:])``.
    """
    if direction not in DIRECTIONS:
        raise UqsegError(f"--direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    if method not in CAM_METHODS:
        raise UqsegError(f"--cam {method!r}: expected one of {', '.join(CAM_METHODS)}")
    if x.ndim not in (4, 5):
        raise UqsegError(f"Grad-CAM: expected an input (N, C, H, W) or (N, C, D, H, W), got {tuple(x.shape)}")
    name = layer or default_layer(model, x)
    module = get_layer(model, name)
    store: dict[str, torch.Tensor] = {}

    def fwd_hook(mod, inp, out):
        if isinstance(out, torch.Tensor):
            store["act"] = out
            return out.clone()  # so a later in-place op (ReLU(inplace=True)) cannot alter `act`
        t = _first_tensor(out)
        if t is not None:
            store["act"] = t
        return None

    handle = module.register_forward_hook(fwd_hook)
    try:
        with torch.enable_grad():
            xin = x.detach().clone().requires_grad_(True)  # a graph exists even if every weight is frozen
            out = _scalar_output(forward(xin) if forward is not None else model(xin))
            if "act" not in store:
                raise UqsegError(f"Grad-CAM: layer {name!r} was not used in the forward pass")
            act = store["act"]
            if act.ndim != x.ndim:
                raise UqsegError(
                    f"--layer {name!r}: its output has shape {tuple(act.shape)}, not a spatial map "
                    f"like the input {tuple(x.shape)}; choose a convolutional layer"
                )
            target = out.sum() if direction == "high" else -out.sum()
            (grad,) = torch.autograd.grad(target, act, allow_unused=True)
    finally:
        handle.remove()
    if grad is None:
        raise UqsegError(f"Grad-CAM: the output does not depend on layer {name!r}")
    cam = cam_from_activations(act.detach(), grad.detach(), method)
    cam = resize_map(cam, tuple(x.shape[2:]))
    return CamResult(cam=cam.float(), output=out.detach().float(), layer=name, layer_shape=tuple(act.shape))


def normalize_map(m: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1] by its maximum (an all-zero map stays zero). Same shape, float32."""
    m = np.asarray(m, dtype=np.float32)
    top = float(m.max()) if m.size else 0.0
    return m / top if top > 0 else np.zeros_like(m)


def top_slices(volume_map: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` slices (axis 0 of ``(D, H, W)``) with the largest map mass, ascending.

    Ties are broken by the lower index; ``k`` is capped at ``D``.
    """
    if volume_map.ndim != 3:
        raise ValueError(f"expected a (D, H, W) map, got shape {volume_map.shape}")
    mass = volume_map.reshape(volume_map.shape[0], -1).sum(axis=1)
    k = max(1, min(int(k), volume_map.shape[0]))
    order = np.lexsort((np.arange(mass.size), -mass))  # by mass descending, then index ascending
    return np.sort(order[:k])


def default_layers(model: nn.Module, x: torch.Tensor, count: int = 3) -> list[str]:
    """The layers Grad-CAM combines by default: the last ``count`` resolution stages, coarsest last.

    For each distinct spatial size of the feature maps (in forward order, more than 1 voxel) the last module that
    outputs it is a stage end (e.g. ``backbone.layer2``, ``layer3``, ``layer4`` of a ResNet at 1/8, 1/16 and 1/32
    of the input). The last stage alone is a few voxels wide (4×4 for a 128² input): blobs that cannot follow a
    lesion; the finer stages give the combined map its detail. ``model.gradcam_layer`` stays the coarsest.
    """
    cands = spatial_layers(model, x)
    last_of: dict[tuple[int, ...], str] = {}
    for name, shape in cands:
        if int(np.prod(shape[2:])) > 1:
            last_of.pop(tuple(shape[2:]), None)  # keep insertion order = the order stages finish
            last_of[tuple(shape[2:])] = name
    stages = list(last_of.values())
    hint = getattr(model, "gradcam_layer", None)
    if isinstance(hint, str) and hint:
        if hint in stages:
            stages = stages[: stages.index(hint) + 1]
        else:
            stages = [*stages, hint]
    if not stages:
        return [default_layer(model, x)]
    return stages[-count:]


def combined_cam(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | list[str] | None = None,
    direction: str = "high",
    method: str = "gradcam",
) -> CamResult:
    """Grad-CAM of several layers on the input grid, each scaled to [0, 1] per input by its maximum, averaged.

    ``layers``: a name, a list, or a comma list (default :func:`default_layers`). One layer gives that layer's
    map scaled to [0, 1]. Returns :class:`CamResult` with ``layer`` the names joined by ``+`` and ``layer_shape``
    the finest layer's activation shape.
    """
    if layers is None:
        names = default_layers(model, x)
    elif isinstance(layers, str):
        names = split_list(layers)
    else:
        names = list(layers)
    maps, output, shapes = [], None, []
    for name in names:
        res = grad_cam(model, x, layer=name, direction=direction, method=method)
        top = res.cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, *([1] * (res.cam.ndim - 1)))
        maps.append(res.cam / top * (res.cam.flatten(1).amax(dim=1) > 0).view_as(top))
        output, shapes = res.output, [*shapes, res.layer_shape]
    finest = max(shapes, key=lambda s: int(np.prod(s[2:])))
    return CamResult(cam=torch.stack(maps).mean(0), output=output, layer="+".join(names), layer_shape=finest)
