"""Tiny models and chunkers that follow the SegModel / Predictor interfaces (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class ToySeg(nn.Module):
    """conv-BN-ReLU encoder, dropout (channel-wise and element-wise) in the decoder, 1x1 head.

    ``dropout_in_encoder`` puts an extra dropout inside the encoder (so the encoder cannot be cached);
    ``lie`` makes the model claim ``dropout_after_encoder`` anyway.
    """

    def __init__(self, dims: int = 2, cin: int = 1, K: int = 3, p: float = 0.3, dropout_in_encoder: bool = False,
                 lie: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        BN = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        DropN = nn.Dropout2d if dims == 2 else nn.Dropout3d
        self.dims = dims
        enc = [Conv(cin, 8, 3, padding=1), BN(8), nn.ReLU()]
        if dropout_in_encoder:
            enc.append(nn.Dropout(p))
        self.enc = nn.Sequential(*enc)
        with torch.no_grad():  # non-trivial running statistics
            self.enc[1].running_mean.uniform_(-0.5, 0.5)
            self.enc[1].running_var.uniform_(0.5, 2.0)
        self.drop_c = DropN(p)
        self.mid = Conv(8, 8, 3, padding=1)
        self.drop_e = nn.Dropout(p)
        self.head = Conv(8, K, 1)
        self._in_enc = dropout_in_encoder
        self._lie = lie

    def encode(self, x):
        return [self.enc(x)]

    def decode(self, feats):
        return self.head(self.drop_e(torch.relu(self.mid(self.drop_c(feats[0])))))

    def forward(self, x):
        return self.decode(self.encode(x))

    @staticmethod
    def repeat_features(features, T):
        return [f.repeat(T, *([1] * (f.dim() - 1))) for f in features]

    @property
    def dropout_after_encoder(self) -> bool:
        return self._lie or not self._in_enc


class Pointwise(nn.Module):
    """1x1 convolutions only: equivariant to every flip and rotation."""

    def __init__(self, dims: int = 2, cin: int = 2, K: int = 3) -> None:
        super().__init__()
        torch.manual_seed(1)
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.net = nn.Sequential(Conv(cin, 6, 1), nn.Tanh(), Conv(6, K, 1))

    def forward(self, x):
        return self.net(x)


@dataclass
class Chunk:
    index: tuple[slice, ...]
    x: torch.Tensor


def chunks_whole(image: torch.Tensor):
    """One chunk for a (C, *spatial) image: the model input is the image itself (N = 1)."""
    yield Chunk(tuple(slice(0, s) for s in image.shape[1:]), image[None].float())


def restore_whole(logits: torch.Tensor, chunk: Chunk) -> torch.Tensor:
    """(n, 1, K, *s) logits -> (n, K, *s) log-probabilities."""
    return torch.log_softmax(logits[:, 0], dim=1)


def chunks_slices(volume: torch.Tensor, batch: int):
    """Slice-wise chunks of a (C, D, H, W) volume: ``batch`` slices per chunk, model input (B, C, H, W)."""
    D, H, W = volume.shape[1:]
    for z0 in range(0, D, batch):
        z1 = min(D, z0 + batch)
        yield Chunk((slice(z0, z1), slice(0, H), slice(0, W)), volume[:, z0:z1].permute(1, 0, 2, 3).float())


def restore_slices(logits: torch.Tensor, chunk: Chunk) -> torch.Tensor:
    """(n, B, K, H, W) -> (n, K, B, H, W) log-probabilities."""
    return torch.log_softmax(logits.transpose(1, 2), dim=1)
