"""pytest plugin: the ``synthetic_run`` factory fixture.

Installed with the package (entry point ``pytest11``), so any project's tests
can write::

    def test_pedestal(synthetic_run):
        path, truth = synthetic_run(steps=(50,), detector='epixM', shape=(1, 8, 8))
        ...
"""

from __future__ import annotations

import pytest


@pytest.fixture
def synthetic_run(tmp_path):
    """Return ``make(name='run.h5', **kwargs) -> (path, truth)`` writing into ``tmp_path``."""
    from calibsuite_h5source.testing import make_synthetic_run

    counter = iter(range(10**6))

    def make(name=None, **kwargs):
        path = tmp_path / (name or f"synthetic{next(counter)}.h5")
        return str(path), make_synthetic_run(path, **kwargs)

    return make
