"""The build cache: unchanged steps are instant, changes rerun exactly what they must."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BUILDFILE = """\
FROM base
ARG USED=1
ARG OTHER=1
COPY data/ /data/
RUN echo "$USED" > /used && ls -ln /data > /listing
COPY late.txt /late.txt
CMD ["cat", "/used"]
"""


@pytest.fixture
def ctx(base: str, tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "data/sub").mkdir(parents=True)
    (root / "Buildfile").write_text(BUILDFILE)
    (root / "data/a.txt").write_text("a")
    (root / "data/sub/b.txt").write_text("b")
    os.symlink("a.txt", root / "data/link")
    (root / "late.txt").write_text("late")
    return root


def _steps(stderr: str) -> dict[str, bool]:
    """Each step's text -> whether it was CACHED (the line that ends a step says)."""
    out: dict[str, bool] = {}
    current = None
    for line in stderr.splitlines():
        if line.startswith("["):
            current = line.split("] ", 1)[1]
        elif current is not None and re.fullmatch(r"  (CACHED|[0-9.]+s)", line):
            out[current] = line.strip() == "CACHED"
            current = None
    return out


def _build(lb, ctx: Path, *extra: str) -> tuple[str, dict[str, bool], str]:
    proc = lb("build", "-t", "app:1", *extra, str(ctx))
    image_id = proc.stdout.split("Successfully built ")[1].split()[0]
    return image_id, _steps(proc.stderr), proc.stderr


def _reran(steps: dict[str, bool]) -> list[str]:
    return [text.split()[0] + " " + text.split()[1] for text, cached in steps.items()
            if not cached and not text.startswith("FROM")]


def test_rebuild_is_fully_cached_with_the_same_id(lb, ctx: Path) -> None:
    first, steps, _ = _build(lb, ctx)
    assert not any(steps.values())
    again, steps, _ = _build(lb, ctx)
    assert again == first
    assert _reran(steps) == []
    for path in ctx.rglob("*"):
        os.utime(path, follow_symlinks=False)  # touched, unchanged: still cached
    touched, steps, _ = _build(lb, ctx)
    assert touched == first and _reran(steps) == []


def test_a_changed_file_reruns_its_copy_and_what_follows(lb, ctx: Path) -> None:
    _build(lb, ctx)
    (ctx / "late.txt").write_text("later")
    _, steps, err = _build(lb, ctx)
    assert _reran(steps) == ["COPY late.txt", "CMD [\"cat\","]
    assert "cache miss: file late.txt changed" in err
    (ctx / "data/sub/b.txt").write_text("B")
    _, steps, err = _build(lb, ctx)
    assert _reran(steps)[:2] == ["COPY data/", "RUN echo"]
    assert "file data/sub/b.txt changed" in err


def test_a_context_file_owner_is_not_in_the_key(lb, ctx: Path) -> None:
    # A copy is owned by root (or --chown), whoever owns the checkout: another machine's or
    # CI runner's checkout of the same files keys the same.
    first, _, _ = _build(lb, ctx)
    os.chown(ctx / "data/a.txt", 1000, 1000)
    again, steps, _ = _build(lb, ctx)
    assert again == first and _reran(steps) == []


@pytest.mark.parametrize("change", ["mode", "link", "file-to-dir", "deleted"])
def test_metadata_changes_miss(lb, ctx: Path, change: str) -> None:
    _build(lb, ctx)
    target = ctx / "data/a.txt"
    if change == "mode":
        os.chmod(target, 0o600)
    elif change == "link":
        (ctx / "data/link").unlink()
        os.symlink("sub/b.txt", ctx / "data/link")
    elif change == "file-to-dir":
        target.unlink()
        target.mkdir()
    else:
        target.unlink()
    _, steps, err = _build(lb, ctx)
    assert _reran(steps)[0] == "COPY data/", err


def test_build_args_rerun_only_what_uses_them(lb, ctx: Path) -> None:
    _build(lb, ctx)
    _, steps, err = _build(lb, ctx, "--build-arg", "USED=2")
    assert _reran(steps)[0] == "RUN echo"
    assert "build arg or variable USED changed" in err
    _, steps, _ = _build(lb, ctx, "--build-arg", "USED=2", "--build-arg", "UNDECLARED=x")
    assert _reran(steps) == []


def test_no_cache_still_dedupes_layers(lb, ctx: Path, store_root: Path) -> None:
    (ctx / "Buildfile").write_text("FROM base\nCOPY data/ /copied/\n")
    _build(lb, ctx)
    layers = set(os.listdir(store_root / "image/overlay2/layerdb/sha256"))
    _, steps, _ = _build(lb, ctx, "--no-cache")
    assert _reran(steps) == ["COPY data/"]
    assert set(os.listdir(store_root / "image/overlay2/layerdb/sha256")) == layers


def test_shared_first_steps_are_stored_once(lb, ctx: Path, store_root: Path,
                                            tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for name in ("data", "late.txt"):
        subprocess.run(["cp", "-a", str(ctx / name), str(other / name)], check=True)
    (other / "Buildfile").write_text("FROM base\nARG USED=1\nARG OTHER=1\nCOPY data/ /data/\n"
                                     "RUN echo other > /other\n")
    _build(lb, ctx)
    proc = lb("build", "-t", "other:1", str(other))
    steps = _steps(proc.stderr)
    assert steps["COPY data/ /data/"] is True  # a different Buildfile, the same step
    one = json.loads(lb("inspect", "app:1").stdout)[0]["Store"]["Layers"]
    two = json.loads(lb("inspect", "other:1").stdout)[0]["Store"]["Layers"]
    assert one[:2] == two[:2]
    assert len(os.listdir(store_root / "image/overlay2/layerdb/sha256")) == 5
    shared = [row for row in lb("du").stdout.splitlines() if row.startswith(
        one[1]["ChainID"][7:19])]
    assert shared and shared[0].split()[3] == "2"


def test_cache_survives_rmi_and_prune(lb, ctx: Path) -> None:
    first, _, _ = _build(lb, ctx)
    lb("rmi", "app:1")
    again, steps, _ = _build(lb, ctx)
    assert again == first and _reran(steps) == []
    lb("prune")
    again, steps, _ = _build(lb, ctx)
    assert again == first and _reran(steps) == []
    lb("prune", "--all")
    _, steps, _ = _build(lb, ctx)
    assert _reran(steps) != []


def test_two_builds_at_once_share_their_common_layers(lb, ctx: Path, store_root: Path,
                                                       tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["cp", "-a", str(ctx), str(other)], check=True)
    (other / "Buildfile").write_text(BUILDFILE.replace("COPY late.txt", "RUN sleep 1\n"
                                                       "COPY late.txt"))
    procs = [subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root",
                               str(store_root), "build", "-t", f"c{i}:1", str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, path in enumerate((ctx, other))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    one = json.loads(lb("inspect", "c0:1").stdout)[0]["RootFS"]["Layers"]
    two = json.loads(lb("inspect", "c1:1").stdout)[0]["RootFS"]["Layers"]
    assert one[:2] == two[:2]  # base and COPY data/: the same layers, stored once
    chains = os.listdir(store_root / "image/overlay2/layerdb/sha256")
    assert len(chains) == len(set(chains))
    assert list((store_root / "tmp").iterdir()) == []


def test_dry_run_shows_the_plan_and_builds_nothing(lb, ctx: Path, store_root: Path) -> None:
    _build(lb, ctx)
    (ctx / "late.txt").write_text("changed")
    layers = sorted(os.listdir(store_root / "image/overlay2/layerdb/sha256"))
    proc = lb("build", "--dry-run", "-t", "app:2", str(ctx))
    assert "Successfully" not in proc.stdout
    lines = proc.stderr.splitlines()
    copy = lines.index("[6/7] COPY late.txt /late.txt")
    assert lines[copy + 1:copy + 3] == ["  cache miss: file late.txt changed", "  would run"]
    assert lines[lines.index("[5/7] RUN echo \"$USED\" > /used && ls -ln /data > /listing")
                 + 1] == "  CACHED"
    assert sorted(os.listdir(store_root / "image/overlay2/layerdb/sha256")) == layers
    assert "app:2" not in lb("images").stdout.replace(" ", ":")


def test_cache_mounts_persist_and_stay_out_of_layers(lb, ctx: Path) -> None:
    (ctx / "Buildfile").write_text(
        "FROM base\nARG RUN_ID\n"
        "RUN --mount=type=cache,target=/var/cache/app echo $RUN_ID >> /var/cache/app/log "
        "&& cat /var/cache/app/log > /seen\n")
    lb("build", "-t", "cm:1", "--build-arg", "RUN_ID=one", str(ctx))
    lb("build", "-t", "cm:2", "--build-arg", "RUN_ID=two", str(ctx))
    info = json.loads(lb("inspect", "cm:2").stdout)[0]
    top = Path(info["Store"]["Layers"][-1]["DiffDir"])
    assert (top / "seen").read_text() == "one\ntwo\n"  # the cache dir outlived the first build
    assert not (top / "var/cache/app/log").exists()
    # The cache mount's content is not part of the key: same inputs, same step, a hit.
    proc = lb("build", "-t", "cm:3", "--build-arg", "RUN_ID=two", str(ctx))
    assert "cache miss" not in proc.stderr
