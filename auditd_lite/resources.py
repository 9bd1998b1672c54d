"""Where the non-Python parts (bpf/, migrations/) are, installed or in a checkout."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def resource_dir(name: str) -> Path:
    """``bpf`` or ``migrations``: shipped as auditd_lite.<name> in a wheel, top-level in a checkout."""
    spec = importlib.util.find_spec(f"auditd_lite.{name}")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if Path(loc).is_dir():
                return Path(loc)
    return Path(__file__).resolve().parent.parent / name
