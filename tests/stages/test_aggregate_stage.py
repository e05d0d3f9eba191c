"""``stages.aggregate`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import typing

import pytest

from tests.helpers import run_cli
from tests.quality.synth import write_chain
from uqseg_cli.errors import UqsegError
from uqseg_cli.quality.regions import REGIONS
from uqseg_cli.stages import aggregate
from uqseg_cli.stages.base import Report, resume_config


@pytest.fixture
def chain(tmp_path, monkeypatch):
    write_chain(tmp_path, n=8, no_ref=("case07",), methods=("tta", "mcdropout"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_python_run_equals_the_command(chain):
    args = ["--measure", "entropy,epkl", "--weights", "learned", "--combine-region", "band", "--band-width", "2"]
    assert run_cli("aggregate", "-q", *args, "--correlate", "cli.corr.csv", "-o", "cli.csv") == 0
    opts = aggregate.AggregateOptions(
        output="py.csv", measures=["entropy", "epkl"], weights="learned", combine_region="band", band_width=2,
        correlate="py.corr.csv",
    )
    result = aggregate.run(opts, Report(quiet=True))
    assert not result.failed and result.done == [f"case{i:02d}" for i in range(8)]
    assert result.summary["methods"] == ["mcdropout", "tta"] and result.summary["stats"] == "py.stats.json"
    for a, b in (("cli.csv", "py.csv"), ("cli.stats.json", "py.stats.json"), ("cli.corr.csv", "py.corr.csv")):
        assert (chain / a).read_bytes() == (chain / b).read_bytes(), a


def test_wide_table_and_reference_scale(chain):
    aggregate.run(aggregate.AggregateOptions(combine=["entropy"]), Report(quiet=True))
    assert run_cli("aggregate", "-q", "--wide", "--reference", "features.stats.json", "-o", "cli.csv") == 0
    opts = aggregate.AggregateOptions(wide=True, reference="features.stats.json", output="py.csv")
    result = aggregate.run(opts, Report(quiet=True))
    assert result.summary["stats"] is None  # a reference scale is not saved again
    assert (chain / "cli.csv").read_bytes() == (chain / "py.csv").read_bytes()


def test_options_validate_with_the_commands_messages():
    with pytest.raises(UqsegError, match="--combine-region 'edge': choose from image"):
        aggregate.AggregateOptions(combine_region="edge")
    with pytest.raises(UqsegError, match="--weights 'mean': choose equal or learned"):
        aggregate.AggregateOptions(weights="mean")
    with pytest.raises(UqsegError, match="cannot be combined with --weights learned"):
        aggregate.AggregateOptions(reference="s.json", weights="learned")
    with pytest.raises(UqsegError, match="--band-width 0"):
        aggregate.AggregateOptions(band_width=0)
    assert aggregate.AggregateOptions(output="-").stats_path is None
    assert str(aggregate.AggregateOptions(output="out/f.csv").stats_path) == "out/f.stats.json"


def test_method_and_measure_errors_name_the_file(chain):
    with pytest.raises(UqsegError, match=r"--method ensemble: not in uncertainty.h5 \(it has mcdropout, tta\)"):
        aggregate.run(aggregate.AggregateOptions(methods=["ensemble"]))
    with pytest.raises(UqsegError, match="--combine variance: not among the measures read"):
        aggregate.run(aggregate.AggregateOptions(measures=["entropy"], combine=["variance"]))


def test_result_changing_options_are_the_config_fields():
    # aggregate writes tables, not a resumable HDF5 file: the config fields document what changes the tables
    assert resume_config(aggregate.AggregateOptions()) == {
        "methods": [], "measures": [], "band_width": 3, "patch_size": 32, "quantile": 0.9, "wide": False,
        "combine": [], "combine_region": "foreground", "weights": "equal", "alpha": 1.0, "reference": None,
    }


def test_cli_choices_are_the_stage_choices():
    from uqseg_cli.cli.aggregate import Region
    from uqseg_cli.cli.aggregate import aggregate as command

    assert typing.get_args(Region) == REGIONS
    hints = typing.get_type_hints(command, include_extras=True)
    assert typing.get_args(typing.get_args(hints["weights"])[0]) == aggregate.WEIGHTS
