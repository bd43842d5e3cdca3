"""A layer tree holding files hard-linked from another layer exports as if they were copies."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

from layerbuild.layer import write_layer


def _tree(root: Path) -> None:
    (root / "app/d").mkdir(parents=True)
    for name in ("app/d/g", "app/d/own"):
        (root / name).write_text(name)
    os.link(root / "app/d/g", root / "app/d/h")  # a pair of this layer's own


def _times(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)


def test_files_linked_from_the_last_layer_are_files_and_own_pairs_stay_links(
        tmp_path: Path) -> None:
    before = tmp_path / "before"
    (before / "app/d").mkdir(parents=True)
    for name in ("app/d/f1", "app/d/f2"):
        (before / name).write_text(name)
    _times(before)
    linked, copied = tmp_path / "linked", tmp_path / "copied"
    for tree in (linked, copied):
        _tree(tree)
    for name in ("app/d/f1", "app/d/f2"):
        os.link(before / name, linked / name)
        shutil.copy2(before / name, copied / name)
    _times(linked)
    _times(copied)
    out_linked, out_copied = io.BytesIO(), io.BytesIO()
    write_layer(linked, out_linked, linked_from=before)
    write_layer(copied, out_copied)
    assert out_linked.getvalue() == out_copied.getvalue()
    with tarfile.open(fileobj=io.BytesIO(out_linked.getvalue())) as tar:
        kinds = {m.name: (m.type, m.linkname) for m in tar.getmembers()}
    assert kinds["app/d/f1"] == (tarfile.REGTYPE, "")
    assert kinds["app/d/f2"] == (tarfile.REGTYPE, "")
    assert kinds["app/d/h"] == (tarfile.LNKTYPE, "app/d/g")
    # Without saying where they came from, the links to the other layer count as pairs of
    # one name each here: the same tar.
    plain = io.BytesIO()
    write_layer(linked, plain)
    assert plain.getvalue() == out_linked.getvalue()


def test_only_this_layers_own_pairs_are_remembered(tmp_path: Path) -> None:
    from layerbuild.digest import HashingWriter
    from layerbuild.layer import export

    before, linked = tmp_path / "before", tmp_path / "linked"
    (before / "app").mkdir(parents=True)
    _tree(linked)
    for i in range(50):
        (before / f"app/f{i}").write_text(str(i))
        os.link(before / f"app/f{i}", linked / f"app/f{i}")
    exporter = export._export(os.fsencode(linked), HashingWriter(io.BytesIO()), None,
                              os.fsencode(before))
    assert len(exporter._links) == 1  # app/d/g, for its pair h; none of the 50 shared files
