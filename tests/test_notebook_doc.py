"""The code blocks of docs/notebook.rst run, and find the injected pulse."""

import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).parent.parent / "docs" / "notebook.rst"


def test_notebook_page_runs(tmp_path, monkeypatch):
    pytest.importorskip("xarray")
    pytest.importorskip("dask.array")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", DOC.read_text())
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    scope = {}
    for block in blocks:
        exec(compile("\n".join(line[4:] for line in block.splitlines()), str(DOC), "exec"), scope)
    assert (tmp_path / "scan.png").stat().st_size > 1000
    xr_curve = scope["curve"]  # the numpy block's curve (last assigned)
    pedestal = scope["pedestal"]
    np.testing.assert_allclose(xr_curve, pedestal[:, 0, 10, 8].values, rtol=1e-5)
    # pixel (0, 10, 8) is injected (every 8th column): the curve peaks at the middle delays
    assert int(np.argmax(xr_curve)) in (2, 3)
    np.testing.assert_allclose(scope["mean_frame"], scope["det"].raw.frames().mean(0), rtol=1e-6)
