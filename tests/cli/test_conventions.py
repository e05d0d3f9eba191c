"""CLI conventions checked over the whole command tree: help, defaults, examples, short flags, common options."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from uqseg_cli.cli.app import STAGES, _split_default, app, click

# stages that compute (read data, run models or maths): they take the common options
COMPUTING = ["train", "predict", "sample", "uncertainty", "aggregate", "score", "explain", "evaluate", "demo"]
COMMON = ["--json", "--threads", "--device", "--quiet"]


@pytest.fixture(scope="module")
def tree():
    root = typer.main.get_command(app)
    ctx = click.Context(root)
    return {name: root.get_command(ctx, name) for name in STAGES}


def _options(cmd):
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and p.name != "help"]


def _help(*args: str) -> str:
    r = CliRunner().invoke(app, [*args], env={"COLUMNS": "200", "TERM": "dumb"}, terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.output


def test_every_stage_is_in_the_tree(tree):
    assert all(tree[n] is not None for n in STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_help_shows_examples_and_every_default(stage, tree):
    long_help = _help(stage, "--help")
    assert _help(stage, "-h") == long_help
    assert "Example" in long_help, f"{stage}: no Examples in --help"
    lines = long_help.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("Example"))
    if lines[at].strip().endswith(":"):  # a block: its command lines stay indented under the heading
        indent = lambda line: len(line) - len(line.lstrip())  # noqa: E731
        assert lines[at + 1].strip().startswith("uqseg") and indent(lines[at + 1]) > indent(lines[at]), lines[at:at + 2]
    cmd = tree[stage]
    needs = []
    for p in _options(cmd):
        flag = bool(getattr(p, "is_flag", False)) and not p.secondary_opts
        if flag or p.required:
            continue
        needs.append(p.opts[-1])
        shown = (p.default is not None and p.show_default) or "[default:" in (p.help or "")
        assert shown, f"{stage} {p.opts[-1]}: no default shown"
    # rendered: one "[default: ...]" per such option, none swallowed by rich markup
    assert long_help.count("[default:") == len(needs), (stage, needs)
    assert "\\[" not in long_help


def test_root_help_and_h():
    out = _help("-h")
    assert out == _help("--help")
    for stage in STAGES:
        assert stage in out


def test_one_meaning_per_short_flag(tree):
    meaning: dict[str, set[str]] = {}
    where: dict[str, list[str]] = {}
    for name, cmd in tree.items():
        for p in _options(cmd):
            shorts = [o for o in p.opts + p.secondary_opts if re.fullmatch(r"-[A-Za-z]", o)]
            longs = [o for o in p.opts if o.startswith("--")]
            for s in shorts:
                meaning.setdefault(s, set()).update(longs[:1])
                where.setdefault(s, []).append(f"{name} {longs[:1]}")
    clash = {s: where[s] for s, m in meaning.items() if len(m) > 1}
    assert not clash, clash
    assert meaning["-m"] == {"--model"}
    assert meaning["-i"] == {"--input"} and meaning["-o"] == {"--output"} and meaning["-q"] == {"--quiet"}


@pytest.mark.parametrize("stage", COMPUTING)
def test_computing_stage_has_the_common_options(stage, tree):
    opts = {o for p in _options(tree[stage]) for o in p.opts}
    missing = [o for o in COMMON if o not in opts]
    assert not missing, f"{stage} lacks {missing}"


@pytest.mark.parametrize("stage", ["aggregate", "score", "evaluate", "uncertainty", "sample", "explain"])
def test_method_is_long_only(stage, tree):
    for p in _options(tree[stage]):
        if "--method" in p.opts:
            assert p.opts == ["--method"], p.opts


@pytest.mark.parametrize(
    "text, rest, default",
    [
        ("Methods, e.g. tta (default: all).", "Methods, e.g. tta.", "all"),
        ("Grid, e.g. 128 (default: 128 (2D), 64 (3D)).", "Grid, e.g. 128.", "128 (2D), 64 (3D)"),
        ("Samples (TTA: at most 8) [default: 20]; the ensemble", "Samples (TTA: at most 8); the ensemble", "20"),
        ("No default here (x).", "No default here (x).", None),
    ],
)
def test_split_default(text, rest, default):
    assert _split_default(text) == (rest, default)


def test_cpu_stage_device_is_checked(tmp_path):
    r = CliRunner().invoke(app, ["aggregate", "-i", str(tmp_path / "none.h5"), "--device", "tpu"])
    assert r.exit_code != 0
    assert "expected auto, cpu, cuda or cuda:N" in str(r.exception) + r.output
