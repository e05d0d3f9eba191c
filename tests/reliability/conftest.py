from __future__ import annotations

import pytest

from tests.reliability.world import build_world, copy_world


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The pristine pipeline folder (never modified; copy it with the ``site`` fixture)."""
    return build_world(tmp_path_factory.mktemp("world") / "w")


@pytest.fixture
def site(world, tmp_path, monkeypatch):
    """A private copy of the world, as the current folder."""
    d = copy_world(world, tmp_path / "site")
    monkeypatch.chdir(d)
    return d
