"""Compressed layer blobs, one file per digest under blobs/sha256/."""

from __future__ import annotations

from pathlib import Path

from layerbuild.digest import Digest


class Blobs:
    """The blob directory: where each blob is, adding staged ones, removing unused ones."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, digest: Digest) -> Path:
        """Where a blob with this digest is kept."""
        return self.directory / digest.hex

    def has(self, digest: Digest) -> bool:
        """Whether a blob with this digest is kept."""
        return self.path(digest).exists()

    def adopt(self, digest: Digest, staged: Path) -> None:
        """Move a staged blob in, unless one with its digest is kept already (hold the lock)."""
        if not self.has(digest):
            staged.rename(self.path(digest))

    def remove(self, digest: Digest) -> None:
        """Delete a blob if it is kept."""
        self.path(digest).unlink(missing_ok=True)

    def remove_unnamed(self, named: set[str]) -> None:
        """Delete every blob whose hex digest is not in `named` (hold the lock)."""
        for entry in self.directory.iterdir():
            if entry.name not in named:
                entry.unlink(missing_ok=True)
