"""Registry and model-shape tests: every registered model, 2D and 3D, the encoder/decoder split."""

from __future__ import annotations

import pytest
import torch

from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.models import count_parameters, create_model, dropout_modules, list_models

NAMES = [m.name for m in list_models()]


def test_registry_lists_the_issue_models():
    assert {"unet-small", "unet3d-small", "fpn-resnet18", "fpn-resnet50", "swin-unet"} <= set(NAMES)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UqsegError, match="unet-small"):
        create_model("no-such-net")


def _input(model, n=2, c=3):
    if model.dims == 3:
        return torch.randn(n, c, 16, 24, 32)
    size = model.fixed_input_size or (64, 96)
    return torch.randn(n, c, *size)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dropout_at", ["head", "decoder"])
def test_shapes_and_split(name, dropout_at):
    torch.manual_seed(0)
    kw = {"img_size": (64, 96)} if name == "swin-unet" else {}
    model = create_model(name, in_channels=3, num_classes=3, dropout=0.3, dropout_at=dropout_at, **kw).eval()
    x = _input(model)
    with torch.no_grad():
        y = model(x)
        feats = model.encode(x)
        assert torch.equal(model.decode(feats), y)  # forward == decode(encode(x)), bit for bit
        rep = model.decode(model.repeat_features(feats, 3))
    assert y.shape == (2, 3, *x.shape[2:])
    assert rep.shape == (6, 3, *x.shape[2:])
    # sample-major: row t*N + n is input n
    torch.testing.assert_close(rep.view(3, 2, 3, *x.shape[2:]), y.expand(3, *y.shape), rtol=1e-5, atol=1e-5)
    assert model.dropout_after_encoder
    drops = dropout_modules(model)
    assert drops and all(d.p == pytest.approx(0.3) for d in drops)
    assert len(drops) == 1 if dropout_at == "head" else len(drops) > 1
    assert not any(dropout_modules(p) for p in model.encoder_parts())
    # with the dropout modules in train mode (MC dropout), decode varies between calls while encode does not
    for d in drops:
        d.train()
    with torch.no_grad():
        f2 = model.encode(x)
        assert all(torch.equal(a, b) for a, b in zip(feats, f2, strict=True))
        assert not torch.equal(model.decode(f2), model.decode(f2))


@pytest.mark.parametrize("name", NAMES)
def test_check_input_refuses_bad_sizes(name):
    kw = {"img_size": (64, 64)} if name == "swin-unet" else {}
    model = create_model(name, **kw)
    bad_spatial = (17,) * model.dims
    with pytest.raises(InputError, match=name):
        model.check_input((1, 3, *bad_spatial))
    with pytest.raises(InputError, match="channel"):
        model.check_input((1, 5, *((64,) * model.dims)))
    with pytest.raises(InputError, match="input"):
        model.check_input((1, 3))


def test_valid_input_size_rounds_up():
    m = create_model("unet-small")
    assert m.size_multiple == 16
    assert m.valid_input_size((286, 383)) == (288, 384)
    s = create_model("swin-unet", img_size=(96, 128))
    assert s.valid_input_size((300, 300)) == (96, 128)
    with pytest.raises(UqsegError, match="multiples of 32"):
        create_model("swin-unet", img_size=(100, 128))


def test_bad_dropout_is_refused():
    with pytest.raises(UqsegError, match="dropout"):
        create_model("unet-small", dropout=1.0)
    with pytest.raises(UqsegError, match="dropout_at"):
        create_model("unet-small", dropout_at="encoder")


def test_parameter_counts_match_a_real_build():
    for name in ("unet-small", "unet3d-small"):
        assert count_parameters(name) == sum(p.numel() for p in create_model(name).parameters())
    # resnet18 backbone alone has 11.18 M parameters; the FPN adds a little
    assert 11_000_000 < count_parameters("fpn-resnet18") < 13_500_000


def test_init_args_rebuild_the_same_architecture():
    m = create_model("unet-small", in_channels=1, num_classes=4, dropout=0.1, channels=(8, 16, 32))
    again = create_model(m.arch, **m.init_args)
    assert [p.shape for p in again.parameters()] == [p.shape for p in m.parameters()]
    assert m.init_args["channels"] == [8, 16, 32]


def test_models_command_lists_every_model(capsys):
    import json

    from tests.models.fixtures import run_cli

    assert run_cli("models", "--json") == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(NAMES)
    assert rows["unet-small"]["parameters"] == count_parameters("unet-small")
    assert rows["swin-unet"]["input"].startswith("exactly 256x256") and rows["unet3d-small"]["dims"] == 3
    assert run_cli("models") == 0
    out = capsys.readouterr().out
    assert all(n in out for n in NAMES) and "multiple of 32" in out
