"""A COPY rebuilt after a few context files changed links the others from its last layer, and
its layer is still the one a clean build makes, byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_cli

from layerbuild.digest import chain_ids
from layerbuild.store import Store

EPOCH = 1_700_000_000
BUILDFILE = """\
FROM base
WORKDIR /app
COPY src/ /app/
RUN cat /app/a/x.txt > /seen && echo more >> /app/a/y.txt
"""


def _context(where: Path) -> Path:
    ctx = where / "ctx"
    for name in ("a/x.txt", "a/y.txt", "a/run.sh", "b/c/z.txt", "top.txt", "h1"):
        (ctx / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / "src" / name).write_text(f"{name}\n")
    os.chmod(ctx / "src/a/run.sh", 0o750)
    os.link(ctx / "src/h1", ctx / "src/h2")  # linked in the source: copied, as a pair
    os.symlink("a/x.txt", ctx / "src/link")
    for path in (ctx / "src").rglob("*"):
        os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    (ctx / "Buildfile").write_text(BUILDFILE)
    return ctx


def _copy_layer(root: Path, ref: str) -> Path:
    """The diff dir of the image's COPY layer (the one below its RUN's)."""
    store = Store(root)
    layer = store.layer(chain_ids(store.get_image(ref).config.diff_ids)[-2])
    assert layer is not None
    return layer.diff_dir


def _diff_ids(root: Path, ref: str) -> list[str]:
    return [str(d) for d in Store(root).get_image(ref).config.diff_ids]


@pytest.mark.parametrize("epoch", [None, EPOCH])
def test_unchanged_files_are_linked_and_the_layer_is_a_clean_builds(
        lb, base: str, store_root: Path, tmp_path: Path, epoch: int | None) -> None:
    env = {"SOURCE_DATE_EPOCH": str(epoch)} if epoch is not None else None
    ctx = _context(tmp_path)
    lb("build", "-t", "app:1", str(ctx), env=env)
    before = _copy_layer(store_root, "app:1")
    (ctx / "src/a/x.txt").write_text("changed\n")
    os.utime(ctx / "src/b/c/z.txt", (1_650_000_000, 1_650_000_000))  # newer, same content
    lb("build", "-t", "app:2", str(ctx), env=env)
    after = _copy_layer(store_root, "app:2")

    def ino(layer: Path, name: str) -> int:
        return os.lstat(layer / "app" / name).st_ino

    assert ino(after, "a/y.txt") == ino(before, "a/y.txt")  # unchanged: linked
    assert ino(after, "a/run.sh") == ino(before, "a/run.sh")
    # In a directory of the image below (WORKDIR's /app), overlayfs writes: copied.
    assert ino(after, "top.txt") != ino(before, "top.txt")
    assert ino(after, "a/x.txt") != ino(before, "a/x.txt")  # changed content: copied
    assert (after / "app/a/x.txt").read_text() == "changed\n"
    assert ino(after, "b/c/z.txt") != ino(before, "b/c/z.txt")  # another mtime: copied
    assert ino(after, "h1") != ino(before, "h1")  # a hard link pair of the source: copied
    assert ino(after, "h1") == ino(after, "h2")
    assert ino(after, "link") != ino(before, "link")  # only regular files are linked
    # The RUN after the copy appended to a linked file in its own layer, not in the shared one.
    assert (before / "app/a/y.txt").read_text() == "a/y.txt\n"
    assert (after / "app/a/y.txt").read_text() == "a/y.txt\n"

    fresh = tmp_path / "fresh"
    lb("save", "base", "-o", str(tmp_path / "base.tar"))
    run_cli(fresh, "load", "-i", str(tmp_path / "base.tar"))
    run_cli(fresh, "build", "-t", "app:2", str(ctx), env=env)
    # Up to the copy's layer; the RUN's files are as new as when it ran, but with an epoch.
    same = len(_diff_ids(fresh, "app:2")) if epoch is not None else 3
    assert _diff_ids(fresh, "app:2")[:same] == _diff_ids(store_root, "app:2")[:same]
    if epoch is not None:  # every time comes from the inputs: the same image
        assert Store(fresh).get_image("app:2").id == Store(store_root).get_image("app:2").id


def test_a_changed_mode_or_owner_is_copied_again(lb, base: str, store_root: Path,
                                                  tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    lb("build", "-t", "app:1", str(ctx))
    before = _copy_layer(store_root, "app:1")
    os.chmod(ctx / "src/a/y.txt", 0o600)
    (ctx / "src/a/x.txt").write_text("changed\n")
    lb("build", "-t", "app:2", str(ctx))
    after = _copy_layer(store_root, "app:2")
    assert os.lstat(after / "app/a/y.txt").st_ino != os.lstat(before / "app/a/y.txt").st_ino
    assert os.lstat(after / "app/a/y.txt").st_mode & 0o777 == 0o600
    assert os.lstat(after / "app/a/run.sh").st_ino == os.lstat(before / "app/a/run.sh").st_ino
    (ctx / "Buildfile").write_text(BUILDFILE.replace("COPY src/", "COPY --chown=7:8 src/"))
    lb("build", "-t", "app:3", str(ctx))  # another instruction: nothing is linked
    owned = os.lstat(_copy_layer(store_root, "app:3") / "app/a/run.sh")
    assert owned.st_ino != os.lstat(after / "app/a/run.sh").st_ino
    assert (owned.st_uid, owned.st_gid) == (7, 8)


def test_a_later_source_still_wins_a_path_both_write(lb, base: str, store_root: Path,
                                                     tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    for src in ("one", "two"):
        for name in ("same.txt", f"only-{src}.txt", "d/deep.txt"):
            (ctx / src / name).parent.mkdir(parents=True, exist_ok=True)
            (ctx / src / name).write_text(f"{src}: {name}\n")
    for path in ctx.rglob("*"):
        os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    text = "FROM base\nCOPY one/ two/ /srv/\nRUN cat /srv/same.txt /srv/d/deep.txt\n"
    (ctx / "Buildfile").write_text(text)
    lb("build", "-t", "two:1", str(ctx))
    (ctx / "one/only-one.txt").write_text("changed\n")
    lb("build", "-t", "two:2", str(ctx))
    layer = _copy_layer(store_root, "two:2")
    assert (layer / "srv/same.txt").read_text() == "two: same.txt\n"
    assert (layer / "srv/d/deep.txt").read_text() == "two: d/deep.txt\n"
    assert (layer / "srv/only-one.txt").read_text() == "changed\n"
    fresh = tmp_path / "fresh"
    lb("save", "base", "-o", str(tmp_path / "base.tar"))
    run_cli(fresh, "load", "-i", str(tmp_path / "base.tar"))
    run_cli(fresh, "build", "-t", "two:2", str(ctx))
    assert _diff_ids(fresh, "two:2")[:2] == _diff_ids(store_root, "two:2")[:2]
