"""Where `make jars` put the JVM artefacts: `jars/` (cwd, else the source tree), or `TRIPSCORE_JARS_DIR`."""

from __future__ import annotations

import os
from pathlib import Path

JARS_DIR_ENV = "TRIPSCORE_JARS_DIR"
SOURCE_TREE = Path(__file__).resolve().parent.parent


def jars_dir() -> Path:
    """The folder holding `kafka/` and `spark/`; `TRIPSCORE_JARS_DIR` wins over the defaults."""
    if env := os.environ.get(JARS_DIR_ENV):
        return Path(env).resolve()
    local = Path("jars")
    return local.resolve() if local.is_dir() else SOURCE_TREE / "jars"


def jar_files(group: str) -> list[Path]:
    """The jars of one group (`kafka` or `spark`), sorted; a clear error when `make jars` has not run."""
    folder = jars_dir() / group
    jars = sorted(folder.glob("*.jar"))
    if not jars:
        raise FileNotFoundError(f"no jars in {folder}: run `make jars` (or set {JARS_DIR_ENV})")
    return jars
