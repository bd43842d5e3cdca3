"""Images in the store: their configs in imagedb, and the tags of repositories.json.

    image/overlay2/imagedb/content/sha256/<image-id>      exact config bytes
    image/overlay2/repositories.json                      tags -> image IDs
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layerbuild.digest import Digest
from layerbuild.errors import FormatError, ImageNotFound, StoreError
from layerbuild.fsutil import fsync_dir, write_atomic
from layerbuild.image import Image
from layerbuild.reference import InvalidReference, Reference

Repositories = dict[str, dict[str, str]]
"""repositories.json's content: repository name -> tag (`name:tag`) -> image ID."""


@dataclass(frozen=True)
class ImageEntry:
    """An image with the tags that name it."""

    image: Image
    tags: tuple[str, ...]


class ImageDB:
    """Image configs by ID and the tags that name them (writers hold the store lock)."""

    def __init__(self, imagedb: Path, repositories: Path) -> None:
        self.imagedb = imagedb
        self.repositories = repositories

    # --- tags -----------------------------------------------------------------------------

    def read_repositories(self) -> Repositories:
        """Every repository's tags, as stored."""
        try:
            data = json.loads(self.repositories.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StoreError(f"{self.repositories} is damaged: {exc}") from None
        repos = data.get("Repositories") or {}
        return {str(k): dict(v) for k, v in repos.items()}

    def write_repositories(self, repos: Repositories) -> None:
        """Replace the stored tags (repositories left without tags are dropped)."""
        repos = {k: v for k, v in sorted(repos.items()) if v}
        write_atomic(self.repositories, json.dumps({"Repositories": repos}, indent=2).encode())

    def tags(self) -> dict[str, Digest]:
        """Every tag (`name:tag`) and the image ID it names."""
        return {tag: Digest.parse(image_id)
                for per_repo in self.read_repositories().values()
                for tag, image_id in per_repo.items() if "@" not in tag}

    def repo_digests(self, image_id: Digest) -> list[str]:
        """The image's RepoDigests (`name@sha256:…`: what it was pulled or pushed as)."""
        return sorted(tag for per_repo in self.read_repositories().values()
                      for tag, found in per_repo.items()
                      if "@" in tag and found == str(image_id))

    def set_tags(self, image_id: Digest, tags: list[Reference]) -> list[str]:
        """Point `tags` at an image whose config is stored (and durable: `put` made it so);
        returns those that were moved away from another.

        Written only after the config, so that no crash leaves a tag naming a missing image;
        not at all when every tag names the image already (a rebuild that changed nothing).
        """
        if not self.has(image_id):
            raise StoreError(f"cannot tag image {image_id.short}: its config is not stored")
        repos = self.read_repositories()
        moved = []
        changed = False
        for ref in tags:
            per_repo = repos.setdefault(ref.name, {})
            old = per_repo.get(ref.familiar)
            if old and old != str(image_id):
                moved.append(ref.familiar)
            changed = changed or old != str(image_id)
            per_repo[ref.familiar] = str(image_id)
        if changed:
            self.write_repositories(repos)
        return moved

    def untag(self, image_id: Digest, ref: str, force: bool) -> tuple[list[str], bool]:
        """Remove the tag `ref` names, or every tag of the image; returns (untagged, whether no
        tag names the image any more)."""
        repos = self.read_repositories()
        names = sorted(t for per in repos.values() for t, i in per.items() if i == str(image_id))
        tags = [t for t in names if "@" not in t]
        if _familiar(ref) in names:
            untag = [_familiar(ref)]
            if not [t for t in tags if t not in untag]:
                untag = names  # the last tag: its RepoDigests go with it, as in Docker
        elif len(tags) > 1 and not force:
            raise StoreError(f"image {image_id.short} is referenced by several tags "
                             f"({', '.join(names)}): remove them by name or use --force")
        else:
            untag = names
        for per_repo in repos.values():
            for tag in untag:
                per_repo.pop(tag, None)
        self.write_repositories(repos)
        return untag, len(untag) == len(names)

    def drop_dangling_tags(self) -> None:
        """Remove tags that name an image that is not stored.

        Configs are written before the tags that name them and deleted after, so no crash
        leaves such a tag; one is left only by a store damaged otherwise (a config deleted by
        hand), and a tag whose image config is still there is never dropped.
        """
        repos = self.read_repositories()
        changed = False
        for per_repo in repos.values():
            for tag, image_id in list(per_repo.items()):
                if not self._names_stored(image_id):
                    del per_repo[tag]
                    changed = True
        if changed:
            self.write_repositories(repos)

    def _names_stored(self, image_id: str) -> bool:
        try:
            return self.has(Digest.parse(image_id))
        except FormatError:
            return False

    # --- configs --------------------------------------------------------------------------

    def has(self, image_id: Digest) -> bool:
        """Whether an image with this ID is stored."""
        return (self.imagedb / image_id.hex).exists()

    def by_id(self, image_id: Digest) -> Image:
        """The stored image with this ID; a StoreError if its config is damaged."""
        try:
            data = (self.imagedb / image_id.hex).read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(f"no such image: {image_id}") from None
        try:
            return Image.from_config_bytes(data)
        except (FormatError, ValueError) as exc:
            raise StoreError(f"image {image_id} in the store is damaged: {exc}") from None

    def resolve(self, ref: str) -> Digest:
        """The image ID that `ref` names: a tag, a full ID, or a unique ID prefix."""
        hexpart = ref.removeprefix("sha256:")
        if hexpart and all(c in "0123456789abcdef" for c in hexpart) and (
                ref.startswith("sha256:") or len(hexpart) >= 4):
            matches = [p.name for p in self.imagedb.iterdir() if p.name.startswith(hexpart)]
            if len(matches) == 1:
                return Digest(matches[0])
            if len(matches) > 1:
                raise ImageNotFound(f"image ID prefix {ref!r} is ambiguous")
        try:
            parsed = Reference.parse(ref, digests=True)
        except InvalidReference:
            raise ImageNotFound(f"no such image: {ref}") from None
        if parsed.digest is not None:
            pinned = parsed.with_digest(parsed.digest)
            value = self.read_repositories().get(pinned.name, {}).get(pinned.familiar)
            found = Digest.parse(value) if value else None
        else:
            found = self.tags().get(parsed.familiar)
        if found is None or not self.has(found):
            raise ImageNotFound(f"no such image: {ref}")
        return found

    def entries(self, damaged: Callable[[StoreError], None] | None = None) -> list[ImageEntry]:
        """Every stored image with its tags.

        An image whose config is damaged raises its StoreError, or with `damaged`, is passed
        to it and left out (a listing names it and goes on; a gc must not miss its layers).
        """
        by_id: dict[Digest, list[str]] = {}
        for tag, image_id in self.tags().items():
            by_id.setdefault(image_id, []).append(tag)
        out = []
        for entry in sorted(self.imagedb.iterdir()):
            if len(entry.name) != 64 or entry.name.startswith("."):
                continue
            image_id = Digest(entry.name)
            try:
                image = self.by_id(image_id)
            except ImageNotFound:
                continue  # removed by another command while listed
            except StoreError as exc:
                if damaged is None:
                    raise
                damaged(exc)
                continue
            out.append(ImageEntry(image, tuple(sorted(by_id.get(image_id, [])))))
        return out

    def put(self, image: Image) -> None:
        """Store an image's config, unless it is stored already."""
        target = self.imagedb / image.id.hex
        if not target.exists():
            write_atomic(target, image.config_bytes)

    def delete(self, image_id: Digest) -> None:
        """Delete an image's config."""
        (self.imagedb / image_id.hex).unlink(missing_ok=True)
        fsync_dir(self.imagedb)


def _familiar(ref: str) -> str:
    try:
        return Reference.parse(ref).familiar
    except InvalidReference:
        return ref
