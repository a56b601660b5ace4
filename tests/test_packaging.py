"""Packaging: the native module and the Python package must be the same version."""

from __future__ import annotations

import subprocess
import sys

import retort
from retort import _core


def test_native_module_matches_the_package_version() -> None:
    assert _core.__version__ == retort.__version__


def test_a_version_mismatch_fails_at_import_with_a_clear_message() -> None:
    # Pretend the Python side is a different release than the compiled core.
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('retort._version')\n"
        "fake.__version__ = '99.0.0'\n"
        "sys.modules['retort._version'] = fake\n"
        "import retort\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "99.0.0" in proc.stderr and _core.__version__ in proc.stderr
    assert "make build" in proc.stderr
