"""`uqseg info` and `uqseg merge` through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.io.toy_stage import main as toy_main

REPO = Path(__file__).resolve().parents[2]


def uqseg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "uqseg_cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_version_and_help_lists_stages():
    r = uqseg("--version")
    assert r.returncode == 0 and r.stdout.startswith("uqseg ")
    r = uqseg("--help")
    assert r.returncode == 0 and "merge" in r.stdout and "info" in r.stdout


def test_info_shows_what_the_runner_wrote(tmp_path):
    out = tmp_path / "toy.h5"
    toy_main([str(out), "3", "--fail", "case001"])
    r = uqseg("info", str(out))
    assert r.returncode == 0, r.stderr
    assert "stage:    toy" in r.stdout and "2 complete" in r.stdout and "1 failed" in r.stdout
    assert "a0" in r.stdout and "(3, 40, 50)" in r.stdout and "float32" in r.stdout
    r = uqseg("info", str(out), "--json")
    d = json.loads(r.stdout)
    assert d["cases_complete"] == 2 and d["cases_total"] == 3 and d["config"] == {"scale": 1.0}
    assert d["cases"]["case000"]["arrays"][0] == {"name": "a0", "shape": [3, 40, 50], "dtype": "float32"}
    assert list(d["failed"]) == ["case001"]


def test_info_errors_are_one_line(tmp_path):
    r = uqseg("info", str(tmp_path / "missing.h5"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "missing.h5: file not found" in r.stderr
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    r = uqseg("info", str(tmp_path / "junk.h5"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not a readable HDF5 file" in r.stderr


def test_merge_cli(tmp_path):
    out = tmp_path / "toy.h5"
    toy_main([str(out), "5", "--num-parts", "2", "--part-id", "0"])
    r = uqseg("merge", "-o", str(out))
    assert r.returncode == 2 and "part(s) 1 of 2 not found" in r.stderr
    toy_main([str(out), "5", "--num-parts", "2", "--part-id", "1"])
    r = uqseg("merge", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cases"] == 5
    r = uqseg("info", str(out), "--json")
    assert json.loads(r.stdout)["cases_complete"] == 5


def test_info_json_is_the_library_description(tmp_path):
    from uqseg_cli.io.describe import describe_stage_file, journal_dir

    out = tmp_path / "toy.h5"
    toy_main([str(out), "3", "--fail", "case001"])
    r = uqseg("info", str(out), "--json")
    assert json.loads(r.stdout) == json.loads(json.dumps(describe_stage_file(out), default=str))
    # an unfinished run: only its journal exists
    unfinished = tmp_path / "run.h5"
    journal_dir(unfinished).mkdir()
    (journal_dir(unfinished) / "case000.h5").write_bytes(b"")
    r = uqseg("info", str(unfinished))
    assert r.returncode == 0 and "run in progress or interrupted; 1 case(s) in" in r.stdout
    assert json.loads(uqseg("info", str(unfinished), "--json").stdout)["state"] == "in progress"
