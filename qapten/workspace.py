"""A run's workspace: a folder that tools may read and write, and nothing outside it."""

from __future__ import annotations

import os
from pathlib import Path

from qapten.errors import WorkspaceError


class Workspace:
    """Files of one run, confined to `root`.

    Every path is resolved (symlinks included) before use, so `..`, absolute paths and links that
    point outside are refused with `WorkspaceError` rather than followed.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, relative: str) -> Path:
        if not relative or relative.strip() == "":
            raise WorkspaceError("empty path: give a file name inside the workspace")
        if os.path.isabs(relative):
            raise WorkspaceError(
                f"absolute path {relative!r} refused: paths are relative to the workspace"
            )
        target = (self.root / relative).resolve()
        if target != self.root and self.root not in target.parents:
            raise WorkspaceError(f"path {relative!r} escapes the workspace")
        return target

    def write_text(self, relative: str, content: str) -> Path:
        target = self.resolve(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash never leaves half a file behind.
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(target)
        return target

    def read_text(self, relative: str) -> str:
        target = self.resolve(relative)
        if not target.is_file():
            raise FileNotFoundError(f"no file {relative!r} in the workspace")
        return target.read_text(encoding="utf-8")

    def list_files(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
