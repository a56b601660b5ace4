"""retort: a unit-of-work ORM session for PostgreSQL with a Rust core."""

from retort._version import __version__
from retort import _core

if _core.__version__ != __version__:  # pragma: no cover - exercised by a packaging test
    raise ImportError(
        f"retort's native module is version {_core.__version__} but the Python package is "
        f"{__version__}; rebuild the extension (`make build`) or reinstall retort"
    )

__all__ = ["__version__"]
