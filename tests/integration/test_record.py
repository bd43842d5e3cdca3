"""Build records: an unchanged rebuild is answered from the record, any change is not."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from layerbuild.cache.records import replay
from layerbuild.cache.stat import SETTLED_NS
from layerbuild.events import Events
from layerbuild.image import Image
from layerbuild.reference import Reference
from layerbuild.request import BuildRequest
from layerbuild.store import Store

BUILDFILE = """\
FROM base
ARG USED=1
COPY src/ /src/
COPY conf/*.ini /etc/app/
RUN echo "$USED" > /used
"""


class Recorder(Events):
    """The steps a build reports, as (text, cached)."""

    def __init__(self) -> None:
        self.steps: list[list[object]] = []

    def step(self, number: int, total: int, text: str, stage: str = "") -> None:
        self.steps.append([text])

    def done(self, seconds: float, cached: bool = False) -> None:
        self.steps[-1].append(cached)


@pytest.fixture
def ctx(base: str, tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src/sub").mkdir(parents=True)
    (root / "conf").mkdir()
    (root / "Buildfile").write_text(BUILDFILE)
    (root / "src/a.txt").write_text("a\n")
    (root / "src/sub/b.txt").write_text("b\n")
    (root / "conf/one.ini").write_text("one\n")
    (root / "conf/notes.txt").write_text("not matched\n")
    _settle()
    return root


def _settle() -> None:
    """Wait until the last change is old enough for a record to vouch for it."""
    time.sleep(SETTLED_NS / 1e9 + 0.05)


def _request(ctx: Path, **changes: object) -> BuildRequest:
    fields: dict[str, object] = {"context": ctx, "buildfile": ctx / "Buildfile",
                                 "tags": (Reference.parse("app:1"),)}
    fields.update(changes)
    return BuildRequest(**fields)  # type: ignore[arg-type]


def _replayed(store_root: Path, request: BuildRequest) -> Image | None:
    return replay(Store(store_root), request, Recorder())


def test_an_unchanged_rebuild_is_the_recorded_image(lb, ctx: Path, store_root: Path) -> None:
    built = lb("build", "-t", "app:1", str(ctx)).stdout.split()[2]
    lb("rmi", "app:1")
    lb("build", "-t", "app:0", str(ctx))  # the image stays stored under another name
    events = Recorder()
    image = replay(Store(store_root), _request(ctx), events)
    assert image is not None and str(image.id) == built
    assert events.steps == [["FROM base", False], ["ARG USED=1", True],
                            ["COPY src/ /src/", True], ["COPY conf/*.ini /etc/app/", True],
                            ['RUN echo "$USED" > /used', True]]
    assert ["app", "1"] in [line.split()[:2] for line in lb("images").stdout.splitlines()]


CHANGES: dict[str, Callable[[Path], None]] = {
    "file content": lambda c: (c / "src/a.txt").write_text("A\n"),
    "file touched": lambda c: os.utime(c / "src/a.txt"),
    "file mode": lambda c: os.chmod(c / "src/a.txt", 0o600),
    "file added to a copied dir": lambda c: (c / "src/sub/new.txt").write_text("new\n"),
    "file removed": lambda c: (c / "src/sub/b.txt").unlink(),
    "file matching a wildcard added": lambda c: (c / "conf/two.ini").write_text("two\n"),
    "symlink swapped for its target": lambda c: ((c / "src/a.txt").rename(c / "a.txt"),
                                                 (c / "src/a.txt").symlink_to("../a.txt")),
    "Buildfile": lambda c: (c / "Buildfile").write_text(BUILDFILE + "ENV X=1\n"),
    ".dockerignore": lambda c: (c / ".dockerignore").write_text("src/sub\n"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_what_the_build_read_takes_the_full_path(lb, ctx: Path,
                                                               store_root: Path,
                                                               change: str) -> None:
    lb("build", "-t", "app:1", str(ctx))
    assert _replayed(store_root, _request(ctx)) is not None
    CHANGES[change](ctx)
    assert _replayed(store_root, _request(ctx)) is None
    _settle()
    lb("build", "-t", "app:1", str(ctx))  # which records the new state
    assert _replayed(store_root, _request(ctx)) is not None


def test_other_requests_and_store_changes_take_the_full_path(lb, ctx: Path,
                                                             store_root: Path) -> None:
    lb("build", "-t", "app:1", str(ctx))
    assert _replayed(store_root, _request(ctx, build_args={"USED": "2"})) is None
    assert _replayed(store_root, _request(ctx, target="nope")) is None
    assert _replayed(store_root, _request(ctx, source_date_epoch=5)) is None
    assert _replayed(store_root, _request(ctx, no_cache=True)) is None
    assert _replayed(store_root, _request(ctx, dry_run=True)) is None
    assert _replayed(store_root, _request(ctx)) is not None
    (ctx / "other.Buildfile").write_text("FROM base\nENV MOVED=1\n")
    lb("build", "-t", "base", "-f", str(ctx / "other.Buildfile"), str(ctx))  # base moves
    assert _replayed(store_root, _request(ctx)) is None
    lb("build", "-t", "app:1", str(ctx))
    lb("rmi", "app:1")
    assert _replayed(store_root, _request(ctx)) is None  # the image is gone
    lb("build", "-t", "app:1", str(ctx))
    lb("prune", "--all")
    assert _replayed(store_root, _request(ctx)) is None  # the cache was dropped


def test_a_torn_record_is_no_record(lb, ctx: Path, store_root: Path) -> None:
    """Records are written without a sync: one a crash cut short (or left as garbage) only
    sends the build down the full path, which writes it whole again."""
    lb("build", "-t", "app:1", str(ctx))
    [record] = (store_root / "buildcache" / "records").glob("*.json")
    whole = record.read_bytes()
    for torn in (whole[: len(whole) // 2], whole[:-3], b"", b"\x00" * 64, b"{}\n"):
        record.write_bytes(torn)
        assert _replayed(store_root, _request(ctx)) is None
        lb("build", "-t", "app:1", str(ctx))
        assert _replayed(store_root, _request(ctx)) is not None


def test_a_new_image_under_a_missing_from_reference_is_seen(lb, ctx: Path,
                                                            store_root: Path) -> None:
    (ctx / "Buildfile").write_text(BUILDFILE + "COPY --from=later /etc/motd /motd\n")
    _settle()
    failed = lb("build", "-t", "app:1", str(ctx), check=False)
    assert failed.returncode != 0  # no record for a failed build
    lb("tag", "base", "later")
    lb("build", "-t", "app:1", str(ctx))
    assert _replayed(store_root, _request(ctx)) is not None
    (ctx / "later.Buildfile").write_text("FROM base\nRUN echo changed > /etc/motd\n")
    lb("build", "-t", "later", "-f", str(ctx / "later.Buildfile"), str(ctx))
    assert _replayed(store_root, _request(ctx)) is None


def test_no_record_vouches_for_a_file_changed_a_moment_ago(lb, ctx: Path, store_root: Path,
                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import layerbuild.cache.stat as stat
    from layerbuild.builder.engine import build

    lb("build", "-t", "app:1", str(ctx))
    (ctx / "src/a.txt").write_text("B\n")  # the same size, changed again
    # Read within a clock tick of that change (made certain here by a longer "tick"): its
    # stat cannot vouch for what it will hold, so no record is kept.
    monkeypatch.setattr(stat, "SETTLED_NS", 3600 * 10**9)
    build(Store(store_root), _request(ctx), Recorder())
    monkeypatch.undo()
    assert _replayed(store_root, _request(ctx)) is None


def test_a_replayed_build_says_what_the_build_said(lb, ctx: Path, store_root: Path) -> None:
    first = lb("build", "--progress", "plain", "--build-arg", "NOBODY=1", str(ctx))
    warning = "warning: build args not used by any ARG: NOBODY"
    assert first.stderr.splitlines()[0] == warning
    request = _request(ctx, build_args={"NOBODY": "1"})
    assert _replayed(store_root, request) is not None  # so the next build is a replay
    again = lb("build", "--progress", "plain", "--build-arg", "NOBODY=1", str(ctx))
    assert again.stderr.splitlines() == [
        warning, "[1/5] FROM base", "  0.0s", "[2/5] ARG USED=1", "  CACHED",
        "[3/5] COPY src/ /src/", "  CACHED", "[4/5] COPY conf/*.ini /etc/app/", "  CACHED",
        '[5/5] RUN echo "$USED" > /used', "  CACHED"]
