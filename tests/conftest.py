"""Fixtures shared by the real-suite acceptance tests (see suite_support.py)."""

import pytest
from suite_support import switched_suite


@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    """One copy of ../shared/suite with its get_ds call switched, for the whole session."""
    return switched_suite(tmp_path_factory.mktemp("suite") / "suite")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("work")
