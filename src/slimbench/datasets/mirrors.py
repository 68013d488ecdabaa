"""Finding raw files in mirrors: local folders, file:// URLs, or http(s) servers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def is_remote(mirror: str) -> bool:
    return urlparse(mirror).scheme in ("http", "https")


def local_dir(mirror: str) -> Path:
    """A local mirror as a path; file:// URLs are accepted (torchvision's downloader refuses them)."""
    parsed = urlparse(mirror)
    return Path(parsed.path) if parsed.scheme == "file" else Path(mirror)


def find_local(mirrors: list[str], subdirs: list[str], filename: str) -> Path | None:
    """The first ``<mirror>/<subdir>/<filename>`` (or ``<mirror>/<filename>``) that exists."""
    for mirror in mirrors:
        if is_remote(mirror):
            continue
        base = local_dir(mirror)
        for sub in [*subdirs, ""]:
            candidate = base / sub / filename if sub else base / filename
            if candidate.exists():
                return candidate
    return None


def remote_mirrors(mirrors: list[str], subdir: str) -> list[str]:
    """http(s) mirrors as base URLs ending in ``<subdir>/``, the form torchvision's `mirrors` wants."""
    return [m.rstrip("/") + f"/{subdir}/" for m in mirrors if is_remote(m)]


def describe(mirrors: list[str]) -> str:
    return ", ".join(mirrors) if mirrors else "(no mirrors configured)"
