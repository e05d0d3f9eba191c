"""The prefetching loader: same values as direct loads, one case ahead, errors raised for their own case."""

from __future__ import annotations

import threading

import pytest

from uqseg_cli.errors import InputError
from uqseg_cli.io.prefetch import Prefetcher


def test_returns_each_case_and_loads_the_next_ahead():
    order = ["a", "b", "c", "d"]
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def load(cid):
        with lock:
            seen.append((cid, threading.current_thread().name))
        return cid.upper()

    with Prefetcher(load, order) as pf:
        assert [pf.get(c) for c in order] == ["A", "B", "C", "D"]
    loaded = [c for c, _ in seen]
    assert sorted(loaded) == order  # every case loaded exactly once
    assert any(name.startswith("uqseg-prefetch") for c, name in seen if c != "a")


def test_skipped_cases_and_unknown_ids():
    calls = []

    def load(cid):
        calls.append(cid)
        return cid

    with Prefetcher(load, ["a", "b", "c", "d", "e"]) as pf:
        assert pf.get("a") == "a"
        assert pf.get("d") == "d"  # the runner skipped b and c (resumed)
        assert pf.get("zz") == "zz"  # not in the order: loaded directly
        assert pf.get("e") == "e"
    assert calls.count("d") == 1 and calls.count("e") == 1
    assert calls.count("c") == 0  # only one case ahead; b may have been loaded ahead of a


def test_errors_belong_to_their_case():
    def load(cid):
        if cid == "b":
            raise InputError("b: cannot decode image")
        return cid

    with Prefetcher(load, ["a", "b", "c"]) as pf:
        assert pf.get("a") == "a"
        with pytest.raises(InputError, match="b: cannot decode"):
            pf.get("b")
        assert pf.get("c") == "c"


def test_depth_zero_has_no_thread():
    names = []
    with Prefetcher(lambda c: names.append(threading.current_thread().name) or c, ["a", "b"], depth=0) as pf:
        assert pf.get("a") == "a" and pf.get("b") == "b"
    assert names == [threading.current_thread().name] * 2


def test_read_once_reads_each_array_once_and_passes_the_rest_through():
    from uqseg_cli.io.prefetch import ReadOnce

    class View:
        spacing = (1.0, 2.0)

        def __init__(self):
            self.reads = []

        def get(self, name):
            self.reads.append(name)
            return [name]

        def has(self, name):
            return name == "segmentation"

    v = View()
    r = ReadOnce(v)
    assert r.get("segmentation") is r.get("segmentation") and r.get("tta/entropy") == ["tta/entropy"]
    assert v.reads == ["segmentation", "tta/entropy"]
    assert r.spacing == (1.0, 2.0) and r.has("segmentation")
