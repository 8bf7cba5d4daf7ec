"""Shared fixtures: the rack-in-a-box (glm45_launch/testing/rackbox.py).

``rackbox`` is one 3-host box for the whole session (building one costs ~0.3 s, but Ray state on
it is expensive); ``fresh_rackbox`` is the same box, reset after the test (user processes killed,
sshd restarted, links up, known_hosts current). Tests that need a box carry ``@pytest.mark.rackbox``:
they skip when this machine cannot build one, and fail instead when CI=true, so CI can never
silently skip the cluster tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from glm45_launch.testing.rackbox import RackBox, free_prefix, requirements_missing


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_rackbox() -> None:
    """Skip (or, under CI=true, fail) the current test if no box can be built here."""
    missing = requirements_missing()
    if not missing:
        return
    reason = "rackbox unavailable, needs: " + "; ".join(missing)
    if _in_ci():
        pytest.fail(reason + " (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rackbox: needs the rack-in-a-box (root, namespaces, sshd)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``-n 2 --dist loadgroup``), every rack-in-a-box test runs on one worker,
    one at a time (they share the box and its addresses); the other tests go to the other worker."""
    for item in items:
        if item.get_closest_marker("rackbox") is not None:
            item.add_marker(pytest.mark.xdist_group("rackbox"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("rackbox") is not None:
        require_rackbox()


@pytest.fixture(scope="session", autouse=True)
def private_launch_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test session takes `up`'s head lock in its own directory: concurrent sessions on one
    machine (and the tests of the lock itself) never see each other's launches."""
    old = os.environ.get("GLM45_LOCK_DIR")
    os.environ["GLM45_LOCK_DIR"] = str(tmp_path_factory.mktemp("launch-lock"))
    yield
    if old is None:
        os.environ.pop("GLM45_LOCK_DIR", None)
    else:
        os.environ["GLM45_LOCK_DIR"] = old


@pytest.fixture(scope="session")
def rackbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RackBox]:
    """A started 3-host box shared by the session (h1 = 10.123.0.1 is the head)."""
    require_rackbox()
    # g45 unless another test session on this machine has a box up right now.
    with RackBox(3, workdir=tmp_path_factory.mktemp("rackbox"), prefix=free_prefix("g45")) as box:
        yield box


@pytest.fixture
def fresh_rackbox(rackbox: RackBox) -> Iterator[RackBox]:
    """The session box, reset() after the test so its state does not leak into the next one."""
    yield rackbox
    rackbox.reset()
