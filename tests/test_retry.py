"""The one retry helper (calibsuite_h5source.h5.retry)."""

import pytest

from calibsuite_h5source.h5.retry import retry


class Flaky:
    def __init__(self, failures, exc=OSError):
        self.failures, self.exc, self.calls = failures, exc, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return "done"


def test_a_transient_failure_is_tried_again_after_recovering():
    action, recovered = Flaky(2), []
    assert retry(action, attempts=5, on=(OSError,), recover=lambda: recovered.append(action.calls), delay=0) == "done"
    assert action.calls == 3 and recovered == [1, 2]


def test_the_last_failure_is_raised_unchanged_after_every_attempt():
    action = Flaky(10)
    with pytest.raises(OSError, match="failure 3"):
        retry(action, attempts=3, on=(OSError,), delay=0)
    assert action.calls == 3


def test_other_failures_are_raised_at_once_without_recovering():
    action, recovered = Flaky(1, KeyError), []
    with pytest.raises(KeyError):
        retry(action, attempts=5, on=(OSError,), recover=lambda: recovered.append(1), delay=0)
    assert action.calls == 1 and recovered == []


def test_attempts_must_be_positive():
    with pytest.raises(ValueError, match="attempts"):
        retry(lambda: None, attempts=0, on=(OSError,))
