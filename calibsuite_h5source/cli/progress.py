"""Progress of long work on stderr: a tqdm bar on a terminal, otherwise a plain line every few seconds.

Nothing shows for work that ends within :data:`FIRST` seconds. Without tqdm,
or when stderr is not a terminal (a log file, a batch job), a line such as
``fake run.h5: 1200 of 3000 events (40%), 6 s`` is printed every
:data:`EVERY` seconds: long work is never silent.
"""

from __future__ import annotations

import os
import sys
import time

#: Seconds of work before anything shows.
FIRST = 2.0
#: Seconds between plain progress lines.
EVERY = 5.0


def plural(n: int, word: str, many: str | None = None) -> str:
    """``'1 warning'``, ``'2 warnings'`` (``many``: an irregular plural)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


class Progress:
    """Progress of one piece of work (``desc``), ``total`` units if known.

    Parameters
    ----------
    desc : str
        What is being done (``'fake run.h5'``).
    total : int, optional
        Units of work, if known.
    unit : str
        The unit counted (``'event'``, ``'file'``).
    stream : file, optional
        Default ``sys.stderr``.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "event", stream=None):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = self._last_line = time.monotonic()
        self._shown = False
        self._bar = None
        if _isatty(self.stream) and _columns(self.stream) > 0:  # a terminal of no width shows no bar: lines
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                options = dict(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)
                try:
                    self._bar = tqdm(delay=FIRST, **options)
                except TypeError:  # tqdm < 4.60: no delay
                    self._bar = tqdm(**options)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.set(self.done + n)

    def set(self, done: int, total: int | None = None) -> None:
        """Set the units done (and the total, when it becomes known)."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        if self._bar is not None:
            self._bar.update(done - self.done)
            self.done = done
            return
        self.done = done
        self._line(self._counts())

    def note(self, text: str) -> None:
        """A status without progress (``'no progress for 4 s while ...'``), shown at most every EVERY s."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)
            return
        self._line(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _counts(self) -> str:
        unit = self.unit if self.done == 1 and not self.total else self.unit + "s"
        if self.total:
            return f"{self.done} of {self.total} {unit} ({100 * self.done / self.total:.0f}%)"
        return f"{self.done} {unit}"

    def _line(self, text: str) -> None:
        now = time.monotonic()
        if now - self.start < FIRST or (self._shown and now - self._last_line < EVERY):
            return
        self._shown, self._last_line = True, now
        print(f"{self.desc}: {text}, {now - self.start:.0f} s", file=self.stream, flush=True)


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
