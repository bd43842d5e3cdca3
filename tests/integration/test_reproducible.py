"""Reproducible images: the same inputs give the same image ID, in any store, at any time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time
from pathlib import Path

import pytest
from conftest import run_cli
from treeutil import need_root

from layerbuild.image import timestamp
from layerbuild.store import Store

EPOCH = 1_700_000_000
EPOCH_TEXT = "2023-11-14T22:13:20Z"

# Whiteouts (a file and a whole dir replaced: opaque), COPY of nested dirs, RUN writing files,
# multi-stage, ADD of an archive, WORKDIR, a heredoc, and SOURCE_DATE_EPOCH as a build arg.
FULL = """\
FROM base AS tool
RUN mkdir -p /out/deep && echo built > /out/deep/tool.txt && chmod 750 /out/deep

FROM base
ARG SOURCE_DATE_EPOCH
COPY tree/ /srv/tree/
ADD bundle.tar.gz /opt/bundle/
COPY --from=tool /out/ /usr/local/tool/
COPY <<EOF /etc/greeting
hello
EOF
RUN rm /data/a && rm -rf /home/user && mkdir -p /home/user && echo new > /home/user/fresh
RUN echo "$SOURCE_DATE_EPOCH" > /epoch && echo generated > /srv/tree/generated.txt
WORKDIR /var/lib/app/state
ENV MODE=repro
CMD ["cat", "/epoch"]
"""

# Nothing runs: every time comes from the inputs, so no epoch is needed to repeat it.
COPY_ONLY = """\
FROM base
COPY tree/ /srv/tree/
COPY top.txt /etc/
ADD bundle.tar.gz /opt/bundle/
COPY <<EOF /etc/greeting
hello
EOF
WORKDIR /var/lib/app/state
LABEL kind=copy-only
ENV MODE=copy
"""


def _context(where: Path, buildfile: str) -> Path:
    """A build context, as a fresh checkout makes it (every mtime is now)."""
    ctx = where / "ctx"
    (ctx / "tree/a/b/c").mkdir(parents=True)
    (ctx / "Buildfile").write_text(buildfile)
    (ctx / "tree/top.txt").write_text("top\n")
    (ctx / "tree/a/one.txt").write_text("one\n")
    (ctx / "tree/a/b/c/deep.txt").write_text("deep\n")
    os.symlink("../one.txt", ctx / "tree/a/b/link")
    (ctx / "top.txt").write_text("top\n")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, body in (("pkg/readme", b"read me\n"), ("pkg/bin/run", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), 1_600_000_000, 0o755
            tar.addfile(info, io.BytesIO(body))
    (ctx / "bundle.tar.gz").write_bytes(data.getvalue())
    return ctx


def _fresh_store(where: Path, base_archive: Path) -> Path:
    root = where / "store"
    run_cli(root, "load", "-i", str(base_archive))
    return root


def _built(proc) -> str:  # type: ignore[no-untyped-def]
    return proc.stdout.split("Successfully built ")[1].split()[0]


def _save(root: Path, ref: str, out: Path, *extra: str) -> str:
    run_cli(root, "save", ref, "-o", str(out), *extra)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _inspect(root: Path, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(run_cli(root, "inspect", ref).stdout)[0]


def _config(root: Path, ref: str) -> dict:  # type: ignore[type-arg]
    """The image's config as stored (the bytes its ID is the digest of)."""
    return json.loads(Store(root).get_image(ref).config_bytes)


@pytest.fixture
def base_archive(lb, base: str, tmp_path: Path) -> Path:
    """The busybox base as an archive, so every store starts from the same image."""
    out = tmp_path / "base.tar"
    lb("save", "base", "-o", str(out))
    return out


def test_same_epoch_same_image_in_two_fresh_stores(lb, base_archive: Path, tmp_path: Path,
                                                   store_root: Path) -> None:
    first = _context(tmp_path / "one", FULL)
    built = lb("build", "-t", "repro:1", str(first), env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    time.sleep(2)  # a later build, from a later checkout of the same sources
    second = _context(tmp_path / "two", FULL)
    other = _fresh_store(tmp_path / "two", base_archive)
    again = run_cli(other, "build", "-t", "repro:1", "--source-date-epoch", str(EPOCH),
                    str(second))
    assert _built(built) == _built(again)
    for compress in ("none", "gzip", "zstd"):
        assert _save(store_root, "repro:1", tmp_path / f"a-{compress}.tar",
                     "--compress", compress) == \
            _save(other, "repro:1", tmp_path / f"b-{compress}.tar", "--compress", compress)
    mine, theirs = _inspect(store_root, "repro:1"), _inspect(other, "repro:1")
    assert mine["RootFS"]["Layers"] == theirs["RootFS"]["Layers"]

    config = _config(store_root, "repro:1")
    base = _config(store_root, "base")
    assert config["created"] == EPOCH_TEXT
    new = config["history"][len(base["history"]):]
    assert new and all(h["created"] == EPOCH_TEXT for h in new)
    assert config["history"][:len(base["history"])] == base["history"]
    assert config["rootfs"]["diff_ids"][:len(base["rootfs"]["diff_ids"])] == \
        base["rootfs"]["diff_ids"]
    out = tmp_path / "rootfs"
    lb("build", "--source-date-epoch", str(EPOCH), "-o", f"type=local,dest={out}", str(first))
    assert (out / "epoch").read_text() == f"{EPOCH}\n"  # RUN sees the build arg
    with tarfile.open(tmp_path / "a-none.tar") as archive:
        for diff_id in config["rootfs"]["diff_ids"][len(base["rootfs"]["diff_ids"]):]:
            blob = archive.extractfile(f"blobs/sha256/{diff_id[7:]}")
            assert blob is not None
            with tarfile.open(fileobj=blob, mode="r|") as layer:
                assert [m.name for m in layer if m.mtime > EPOCH] == []


def test_epoch_is_part_of_every_key(lb, base_archive: Path, tmp_path: Path) -> None:
    ctx = _context(tmp_path, COPY_ONLY)
    plain = _built(lb("build", str(ctx)))
    dated = lb("build", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}", str(ctx))
    assert "CACHED" not in dated.stderr  # nothing made under other times is reused
    assert "SOURCE_DATE_EPOCH changed" in dated.stderr
    assert _built(dated) != plain
    again = lb("build", "--source-date-epoch", str(EPOCH), str(ctx))
    assert _built(again) == _built(dated)
    assert "not used by any ARG" not in again.stderr  # it is a build arg nobody has to use


def test_copy_only_images_repeat_without_an_epoch(lb, base_archive: Path, tmp_path: Path,
                                                  store_root: Path, busybox_rootfs: Path,
                                                  ) -> None:
    ctx = _context(tmp_path, COPY_ONLY)
    newest = int(time.time()) + 5  # every source file's time, later than the base's
    for path in [ctx, *ctx.rglob("*")]:
        os.utime(path, (newest, newest), follow_symlinks=False)
    first = _built(lb("build", "-t", "copy:1", str(ctx)))
    time.sleep(2)
    other = _fresh_store(tmp_path / "two", base_archive)
    second = _built(run_cli(other, "build", "-t", "copy:1", str(ctx)))
    assert first == second
    assert _save(store_root, "copy:1", tmp_path / "a.tar") == \
        _save(other, "copy:1", tmp_path / "b.tar")
    # Its times are its inputs': the newest file copied, never the clock.
    config = _config(store_root, "copy:1")
    assert config["created"] == config["history"][-1]["created"]
    assert timestamp(config["created"]) == newest
    out = tmp_path / "rootfs"
    lb("build", "-o", f"type=local,dest={out}", str(ctx))
    made = [out / "var/lib/app/state", out / "var/lib/app",  # WORKDIR: the step before
            out / "opt/bundle",  # ADD's destination: the step before
            out / "opt/bundle/pkg",  # not listed in the archive: the step before
            out / "srv", out / "srv/tree", out / "etc/greeting"]  # their sources'
    assert {p: int(p.lstat().st_mtime) for p in made} == {p: newest for p in made}
    assert (out / "opt/bundle/pkg/readme").stat().st_mtime == 1_600_000_000
    # A directory the copies wrote into keeps the time the base gave it.
    assert int((out / "etc").stat().st_mtime) == int((busybox_rootfs / "etc").stat().st_mtime)


def test_a_docker_saved_base_is_never_rewritten(lb, docker, busybox_tar: Path,
                                                tmp_path: Path, store_root: Path) -> None:
    need_root()
    base_ref = docker.name("repro-base")
    docker("import", str(busybox_tar), base_ref)
    saved = tmp_path / "docker-base.tar"
    docker("save", "-o", str(saved), base_ref)
    lb("load", "-i", str(saved))
    base = _config(store_root, base_ref)
    ctx = _context(tmp_path, FULL.replace("FROM base", f"FROM {base_ref}"))
    name = docker.name("repro")
    lb("build", "-t", name, str(ctx), env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    config = _config(store_root, name)
    assert config["rootfs"]["diff_ids"][0] == base["rootfs"]["diff_ids"][0]
    assert config["history"][0] == base["history"][0]
    assert [h["created"] for h in config["history"][1:]] == \
        [EPOCH_TEXT] * (len(config["history"]) - 1)
    archive = tmp_path / "repro.tar"
    lb("save", name, "-o", str(archive))
    docker("rmi", "-f", name, check=False)
    docker("load", "-i", str(archive))
    ran = docker("run", "--rm", "--network", "none", name)
    assert ran.stdout == f"{EPOCH}\n"
    assert docker("inspect", "-f", "{{.Created}}", name).stdout.strip() == EPOCH_TEXT


def test_nothing_of_the_host_gets_in(lb, base_archive: Path, tmp_path: Path,
                                     store_root: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text("FROM base\nRUN touch /made && cat /etc/resolv.conf "
                                   "/etc/hosts >/dev/null && ls /proc/self /dev/null\n")
    lb("build", "-t", "host:1", str(ctx))
    archive = tmp_path / "host.tar"
    lb("save", "host:1", "-o", str(archive))
    config = _config(store_root, "host:1")
    with tarfile.open(archive) as tar:
        top = config["rootfs"]["diff_ids"][-1].split(":")[1]
        layer = tar.extractfile(f"blobs/sha256/{top}")
        assert layer is not None
        data = layer.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as inner:
        assert inner.getnames() == ["made"]  # no resolv.conf, hosts, proc, dev or sys
    written = data + json.dumps(config).encode()
    for secret in (socket.gethostname(), str(store_root), str(tmp_path)):
        assert secret.encode() not in written
    cache_ids = [p.name for p in Store(store_root).overlay.iterdir()]
    assert cache_ids and not any(c.encode() in written for c in cache_ids)


def test_run_images_differ_only_in_what_the_run_wrote(lb, base_archive: Path,
                                                      tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM base\nCOPY tree/ /srv/tree/\n"
                   "RUN date +%s%N > /stamp && echo same > /same\nLABEL after=run\n")
    lb("build", "-t", "run:1", str(ctx))
    time.sleep(1.1)
    lb("build", "--no-cache", "-t", "run:2", str(ctx))
    proc = lb("diff", "run:1", "run:2", check=False)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()[1:]
    # Layer 1 (the COPY) is the same; layer 2 (the RUN) differs in what it wrote, and the
    # times are the RUN's and the LABEL's after it.
    assert {tuple(line.split(": ", 2)[:2]) for line in lines} == {
        ("config", "created"), ("config", "rootfs.diff_ids[2]"),
        ("history[2]", "created"), ("history[3]", "created"),
        ("layer 2", "/stamp"), ("layer 2", "/same")}
    same = next(line for line in lines if line.startswith("layer 2: /same: "))
    assert same.split(": ", 2)[2].startswith("mtime ")  # the same content, written later
    assert "content" in next(line for line in lines if line.startswith("layer 2: /stamp: "))
