"""The served model: loaded from `models/ACTIVE`, switched in place when ACTIVE names another version."""

from __future__ import annotations

import logging
from pathlib import Path

from modelregistry.export import EXPORT_FILE, ModelError, ModelExport
from modelregistry.registry import active_version, load_export

log = logging.getLogger(__name__)


class ActiveModel:
    """Holds the ModelExport in service; `refresh()` is cheap enough to poll every second."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.model: ModelExport | None = None
        self._failed: tuple[str, int] | None = None  # (version, export mtime) that failed; logged once
        self.refresh()

    @property
    def version(self) -> str | None:
        return self.model.version if self.model else None

    def refresh(self) -> bool:
        """Load the ACTIVE version when it changed; keep the current model if it cannot be loaded."""
        try:
            wanted = active_version(self.models_dir)
        except OSError as exc:
            log.error("cannot read %s/ACTIVE: %s; keeping %s", self.models_dir, exc, self.version)
            return False
        if wanted is None or wanted == self.version:
            return False
        attempt = (wanted, self._export_mtime(wanted))
        if attempt == self._failed:
            return False
        try:
            model = load_export(self.models_dir, wanted)
        except (ModelError, OSError, ValueError) as exc:
            self._failed = attempt
            log.error("model %s cannot be served (%s); keeping %s", wanted, exc, self.version)
            return False
        if model.version != wanted:
            self._failed = attempt
            log.error("model folder %s holds an export named %s; keeping %s", wanted, model.version, self.version)
            return False
        log.info("serving model %s (was %s)", wanted, self.version)
        self.model, self._failed = model, None
        return True

    def _export_mtime(self, version: str) -> int:
        try:
            return (self.models_dir / version / EXPORT_FILE).stat().st_mtime_ns
        except OSError:
            return 0
