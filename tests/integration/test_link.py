"""COPY/ADD --link: a layer made apart from the image below it, reused on any base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BASE = """\
FROM base
ARG FLAVOUR=one
RUN echo "$FLAVOUR" > /flavour && ln -s /etc /linkdir
"""

APP = """\
FROM flavoured
COPY --link --chown=user app/ /opt/app/
COPY --link note.txt /linkdir/
RUN cat /flavour /opt/app/x > /combined
"""


@pytest.fixture
def ctx(base: str, tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "app/sub").mkdir(parents=True)
    (root / "app/x").write_text("x\n")
    (root / "app/sub/y").write_text("y\n")
    (root / "note.txt").write_text("note\n")
    (root / "Buildfile").write_text(APP)
    (root / "base.Buildfile").write_text(BASE)
    return root


def _base(lb, ctx: Path, flavour: str) -> None:  # type: ignore[no-untyped-def]
    lb("build", "-t", "flavoured", "-f", str(ctx / "base.Buildfile"),
       "--build-arg", f"FLAVOUR={flavour}", str(ctx))


def _layers(lb, ref: str) -> list[str]:  # type: ignore[no-untyped-def]
    return json.loads(lb("inspect", ref).stdout)[0]["RootFS"]["Layers"]


def test_linked_layers_are_the_same_on_any_base_and_are_rebased(lb, ctx: Path,
                                                                tmp_path: Path) -> None:
    _base(lb, ctx, "one")
    first = lb("build", "-t", "app:1", str(ctx))
    one = _layers(lb, "app:1")
    _base(lb, ctx, "two")  # a new base: every layer above it is on another stack
    second = lb("build", "-t", "app:2", str(ctx))
    two = _layers(lb, "app:2")
    assert one[-3:-1] == two[-3:-1]  # the linked layers, byte for byte
    assert one[:-3] != two[:-3] and one[-1] != two[-1]
    lines = second.stderr.splitlines()
    done = {lines[i].split("] ", 1)[1]: lines[i + 1].strip() for i, line in enumerate(lines)
            if line.startswith("[") and i + 1 < len(lines)}
    assert done["COPY --chown=user --link app/ /opt/app/"] == "CACHED"
    assert done["COPY --link note.txt /linkdir/"] == "CACHED"
    assert done["RUN cat /flavour /opt/app/x > /combined"] != "CACHED"  # it sees the new base
    assert "CACHED" not in first.stderr.split("FROM flavoured")[1]
    out = tmp_path / "rootfs"
    lb("build", "-o", f"type=local,dest={out}", str(ctx))
    assert (out / "combined").read_text() == "two\nx\n"
    assert (out / "opt/app/sub/y").stat().st_uid == 1000  # --chown names from the base
    # The base's symlink is not followed: the layer was made without it.
    assert (out / "linkdir").is_dir() and not (out / "linkdir").is_symlink()
    assert (out / "linkdir/note.txt").read_text() == "note\n"
    assert not (out / "etc/note.txt").exists()


def test_without_link_a_new_base_reruns_the_copy(lb, ctx: Path) -> None:
    (ctx / "Buildfile").write_text(APP.replace("--link ", ""))
    _base(lb, ctx, "one")
    lb("build", "-t", "app:1", str(ctx))
    _base(lb, ctx, "two")
    again = lb("build", "-t", "app:2", str(ctx))
    assert "CACHED" not in again.stderr.split("FROM flavoured")[1]
    out = lb("build", "-q", str(ctx)).stdout.strip()
    assert out.startswith("sha256:")
