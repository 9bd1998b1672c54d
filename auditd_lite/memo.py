"""A bounded memo for the values a record stream repeats (comm, filename, a working directory,
a context): each distinct one made once. Standard library only: the capture side and the
chain (the analysis side too) both use it."""

from __future__ import annotations

from typing import Callable


class Memo(dict):
    """key -> make(key), made on the first lookup; emptied whole at ``bound`` entries (a
    stream's values repeat, so it refills with the ones in use)."""

    def __init__(self, make: Callable, bound: int = 4096):
        super().__init__()
        self.make = make
        self.bound = bound

    def __missing__(self, key):
        if len(self) >= self.bound:
            self.clear()
        value = self[key] = self.make(key)
        return value
