"""A minimal progress bar on stderr (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last_line = -1

    def step(self, label: str) -> None:
        """Announce the step about to run (the bar shows steps finished so far)."""
        frac = min(1.0, self.done / self.total)
        filled = int(frac * self.width)
        elapsed = time.monotonic() - self.start
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {elapsed:5.0f}s  {label}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:150])
            self.stream.flush()
        else:
            # Not a terminal: a line per 10% keeps logs readable.
            decile = int(frac * 10)
            if decile != self._last_line:
                self._last_line = decile
                self.stream.write(line + "\n")
                self.stream.flush()

    def advance(self) -> None:
        self.done += 1

    def finish(self) -> None:
        elapsed = time.monotonic() - self.start
        line = f"[{'#' * self.width}] {self.total}/{self.total} {elapsed:5.0f}s  done"
        self.stream.write(("\r\x1b[2K" if self.tty else "") + line + "\n")
        self.stream.flush()
