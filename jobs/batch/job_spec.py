"""Scheduled job specs (``hmrflow job run SPEC.yaml``): a strict, typed description of a run.

Example::

    name: gait-lab-nightly          # run name (reports: OUT/_job/reports/<name>-<time>/)
    inputs:
      - folder: /data/gait/incoming  # searched recursively
        patterns: ["**/*.mp4", "**/*.MOV"]   # optional; default: every video extension
      - manifest: /data/gait/extra.csv       # CSV/Parquet with a 'path' column
    preset: clinical                 # a preset name or a YAML file
    overrides: ["refine.steps=30"]   # optional section.key=value overrides
    output: /data/gait/hmrflow       # output root (ledger, lock and reports inside)
    strict: true                     # clinical: fail loudly (see below)
    max_attempts: 2
    start: 2.0                       # optional time window of every video: seconds (2.0, 2s)
    end: 900f                        #   or frame numbers (900f); a manifest's start/end columns win

``start``/``end`` are ``decode.start``/``decode.end`` (:mod:`hmrflow.pipeline.window`): the
window ``[start, end)`` of every video, in the video's own time or frame numbers, that is
decoded; outputs keep the original frame indices and timestamps.  A manifest input's
``start``/``end`` columns set a video's own window, where a cell is empty the spec's applies.

Relative paths are relative to the spec file's folder.  Unknown keys, wrong types and
out-of-range values are rejected with the key named (:class:`ConfigError`).

``strict: true`` (the default, for clinical runs) means: damaged videos are errors
(``decode.allow_truncated`` forced off), a missing input folder or manifest is an error,
and the first failed video stops the run (nothing more is started; exit code 3) instead
of being skipped.  ``strict: false`` processes what it can, records failures and carries on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from hmrflow.jobs.batch.inputs import (
    VIDEO_EXTENSIONS,
    InputError,
    InputRow,
    InputVideo,
    assign_ids,
    read_manifest_table,
    scan_folder,
    scan_glob,
)
from hmrflow.pipeline.config import Strict, _format_validation_error
from hmrflow.pipeline.errors import ConfigError
from hmrflow.pipeline.window import TimePointError, Window, canonical, window_of

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class InputSource(Strict):
    """One input: a folder (optionally with glob patterns relative to it) or a manifest."""

    folder: Optional[str] = Field(None, description="folder searched recursively for videos")
    patterns: Optional[list[str]] = Field(None, description="globs relative to folder ('**' recurses)")
    manifest: Optional[str] = Field(None, description="CSV/Parquet manifest with a 'path' column")

    @model_validator(mode="after")
    def _one_kind(self) -> "InputSource":
        if (self.folder is None) == (self.manifest is None):
            raise ValueError("give exactly one of 'folder' or 'manifest'")
        if self.patterns is not None and self.folder is None:
            raise ValueError("'patterns' needs a 'folder'")
        if self.patterns is not None and not self.patterns:
            raise ValueError("'patterns' is empty")
        return self


class JobSpec(Strict):
    """A scheduled run (see module docstring)."""

    name: str = Field(description="run name: letters, digits, '.', '_', '-'")
    inputs: list[InputSource] = Field(min_length=1)
    preset: str = "clinical"
    overrides: list[str] = Field(default_factory=list)
    output: str
    strict: bool = True
    max_attempts: int = Field(2, ge=1, le=100)
    runner: Literal["local", "ray"] = "local"
    address: Optional[str] = Field(None, description="Ray cluster address (runner: ray)")
    stall_timeout_s: float = Field(600.0, gt=0, description="fail a video that makes no progress this long")
    video_timeout_s: Optional[float] = Field(None, gt=0, description="fail a video that takes longer than this")
    pipeline: Optional[str] = Field(None, description="advanced: module:function building the stages")
    start: Optional[str] = Field(None, description="time window start of every video: 12.5, 12.5s or 300f")
    end: Optional[str] = Field(None, description="time window end (exclusive), same forms; None = to the end")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_point(cls, v: Any) -> Optional[str]:
        # YAML gives 12.5 as a float and 300f as a string: both become canonical text
        try:
            return canonical(v)
        except TimePointError as exc:
            raise ValueError(exc.reason) from None

    @model_validator(mode="after")
    def _window_order(self) -> "JobSpec":
        try:
            self.window.check_order()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def window(self) -> Window:
        """The spec's time window (applies where a manifest gives a video none)."""
        return window_of(self.start, self.end)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be 1-64 of letters, digits, '.', '_', '-', starting with a letter or digit")
        return v

    def resolve_paths(self, base: Path) -> "JobSpec":
        """A copy whose relative folder/manifest/output/preset paths are made absolute from ``base``."""

        def absolute(p: Optional[str]) -> Optional[str]:
            if p is None:
                return None
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else (base / q).resolve())

        preset = self.preset
        if preset.endswith((".yaml", ".yml")):
            preset = absolute(preset) or preset
        inputs = [
            InputSource(folder=absolute(s.folder), patterns=s.patterns, manifest=absolute(s.manifest))
            for s in self.inputs
        ]
        return self.model_copy(update={"inputs": inputs, "output": absolute(self.output), "preset": preset})

    def config_overrides(self) -> list[str]:
        """The spec's overrides, plus ``decode.allow_truncated=false`` when strict and its window.

        ``start``/``end`` come first so that an explicit ``decode.start=...`` override wins.
        """
        out = [f"decode.{k}={v}" for k, v in (("start", self.start), ("end", self.end)) if v is not None]
        out += self.overrides
        if self.strict:
            out.append("decode.allow_truncated=false")
        return out


def load_job_spec(path: str | Path) -> JobSpec:
    """Read and validate a job spec YAML; relative paths resolved from its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: job spec not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the job spec ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, f"job spec {p}")) from None
    return spec.resolve_paths(p.resolve().parent)


def job_inputs(spec: JobSpec) -> list[InputVideo]:
    """Every video named by the spec's inputs (ids unique across all of them).

    Strict specs raise :class:`InputError` for a missing folder or manifest; otherwise
    such a source is skipped with a warning.  An existing folder without videos is fine
    (nothing new to do).
    """
    import logging

    log = logging.getLogger(__name__)
    rows: list[InputRow] = []
    for src in spec.inputs:
        try:
            if src.folder is not None:
                folder = Path(src.folder)
                if not folder.is_dir():
                    raise InputError(f"{folder}: input folder not found")
                if src.patterns:
                    for pat in src.patterns:
                        rows += [InputRow(f, None, {}) for f in scan_glob(str(folder / pat))]
                else:
                    rows += [InputRow(f, None, {}) for f in scan_folder(folder, VIDEO_EXTENSIONS)]
            else:
                rows += read_manifest_table(Path(src.manifest or ""))
        except InputError as exc:
            if spec.strict:
                raise
            log.warning("skipping input: %s", exc)
    return assign_ids(rows) if rows else []
