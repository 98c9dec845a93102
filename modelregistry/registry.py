"""Versioned model folders `models/trip_decline_risk_lr_v<N>/` and the `models/ACTIVE` pointer."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelregistry.export import ModelError, ModelExport

MODEL_PREFIX = "trip_decline_risk_lr_v"
ACTIVE_FILE = "ACTIVE"
_VERSION_RE = re.compile(re.escape(MODEL_PREFIX) + r"(\d+)")


def version_number(version: str) -> int:
    """N of `trip_decline_risk_lr_v<N>`; ModelError for any other name."""
    match = _VERSION_RE.fullmatch(version)
    if not match:
        raise ModelError(f"{version!r} is not a model version (expected {MODEL_PREFIX}<N>)")
    return int(match.group(1))


def list_versions(models_dir: Path) -> list[str]:
    """Every model version folder, oldest first."""
    if not models_dir.is_dir():
        return []
    names = [p.name for p in models_dir.iterdir() if p.is_dir() and _VERSION_RE.fullmatch(p.name)]
    return sorted(names, key=version_number)


def next_version(models_dir: Path) -> str:
    """The name the next trained model gets."""
    versions = list_versions(models_dir)
    return f"{MODEL_PREFIX}{version_number(versions[-1]) + 1 if versions else 1}"


def active_version(models_dir: Path) -> str | None:
    """The served version named by `ACTIVE`, or None when nothing is promoted."""
    try:
        name = (models_dir / ACTIVE_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def load_export(models_dir: Path, version: str) -> ModelExport:
    """The portable export of one version."""
    version_number(version)
    return ModelExport.load(models_dir / version)


def load_active(models_dir: Path) -> ModelExport | None:
    """The export of the ACTIVE version, or None when nothing is promoted."""
    version = active_version(models_dir)
    return load_export(models_dir, version) if version else None


def promote(models_dir: Path, version: str) -> ModelExport:
    """Point ACTIVE at `version` atomically, after checking its export loads."""
    export = load_export(models_dir, version)
    tmp = models_dir / f".{ACTIVE_FILE}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, models_dir / ACTIVE_FILE)
    return export


@contextmanager
def staged_version(models_dir: Path) -> Iterator[tuple[str, Path]]:
    """The next version name and a hidden staging folder that becomes `models_dir/<version>/` atomically when the
    block succeeds; on error it is removed, so a version folder is never half-written."""
    models_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(models_dir)
    staging = models_dir / f".{version}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield version, staging
        os.rename(staging, models_dir / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def describe_versions(models_dir: Path) -> list[dict[str, Any]]:
    """One summary per version, oldest first: active flag, dataset, created_at, AUCs, or the load error."""
    active = active_version(models_dir)
    rows: list[dict[str, Any]] = []
    for version in list_versions(models_dir):
        row: dict[str, Any] = {"version": version, "active": version == active}
        try:
            export = load_export(models_dir, version)
        except ModelError as exc:
            row["error"] = str(exc)
        else:
            metrics = export.metrics
            row.update(dataset=export.dataset, created_at=export.created_at, auc=metrics.get("auc"),
                       oracle_auc=metrics.get("oracle_auc"), train_rows=metrics.get("train_rows"))
        rows.append(row)
    return rows
