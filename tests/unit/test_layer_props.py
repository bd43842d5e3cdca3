"""Properties: headers parse back exactly, names clean safely, trees survive dir -> tar -> dir."""

from __future__ import annotations

import io
import itertools
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbuild.errors import UnsafePath
from layerbuild.layer import Compression, compress_writer, extract_layer, open_decompressed
from layerbuild.layer import tarheader as th
from layerbuild.layer.export import write_layer
from layerbuild.layer.paths import clean

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, setuid bits)")
quick = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

raw_names = st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b)
# tarfile drops a trailing slash from every PAX path; only dirs have one in a layer
file_names = raw_names.filter(lambda b: not b.endswith(b"/"))
ids = st.integers(min_value=0, max_value=2**32 - 2)


@quick
@given(name=file_names, link=raw_names, uid=ids, gid=ids,
       mtime=st.integers(min_value=-(2**33), max_value=2**40),
       xattrs=st.dictionaries(st.from_regex(r"user\.[a-z0-9._-]{1,20}", fullmatch=True),
                              st.binary(max_size=64), max_size=3))
def test_headers_parse_back_exactly(name: bytes, link: bytes, uid: int, gid: int, mtime: int,
                                    xattrs: dict[str, bytes]) -> None:
    header = th.Header(name, th.SYMLINK, 0o777, uid, gid, 0, mtime, link,
                       xattrs=tuple(sorted((k.encode(), v) for k, v in xattrs.items())))
    blob = th.encode(header) + th.END_OF_ARCHIVE
    assert len(blob) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r|") as tf:
        (m,) = list(tf)
    assert os.fsencode(m.name) == name and os.fsencode(m.linkname) == link
    assert (m.uid, m.gid, m.mtime, m.uname, m.gname) == (uid, gid, mtime, "", "")
    got = {k.removeprefix("SCHILY.xattr."): v.encode("utf-8", "surrogateescape")
           for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    assert got == xattrs


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.d", "..."]), max_size=8),
       st.booleans())
def test_clean_never_escapes_and_is_idempotent(comps: list[str], rooted: bool) -> None:
    name = ("/" if rooted else "") + "/".join(comps)
    try:
        parts = clean(name)
    except UnsafePath:
        depth = 0
        for c in comps:
            depth += -1 if c == ".." else (0 if c in ("", ".") else 1)
            if depth < 0:
                return
        raise
    assert not {".", "..", ""} & set(parts)
    assert clean("/".join(parts)) == parts


@quick
@given(data=st.binary(max_size=3 << 20), cuts=st.lists(st.integers(0, 3 << 20), max_size=6),
       kind=st.sampled_from([Compression.GZIP, Compression.ZSTD]))
def test_compressed_bytes_depend_only_on_content(data: bytes, cuts: list[int],
                                                 kind: Compression) -> None:
    def pack(pieces: list[bytes]) -> bytes:
        out = io.BytesIO()
        with compress_writer(kind, out) as w:
            for piece in pieces:
                w.write(piece)
        return out.getvalue()

    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    split = [data[a:b] for a, b in itertools.pairwise(bounds)]
    blob = pack([data])
    assert pack(split) == blob
    assert open_decompressed(io.BytesIO(blob)).read() == data


names = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                min_size=1, max_size=12).filter(lambda n: n not in (".", "..")
                                                and not n.startswith(".wh."))
files = st.tuples(st.just("file"), st.binary(max_size=3000),
                  st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2755, 0o444]))
links = st.tuples(st.just("symlink"), st.sampled_from(["/etc/passwd", "../x", ".", "a/b/../c"]),
                  st.just(0o777))
trees = st.recursive(st.one_of(files, links),
                     lambda kids: st.dictionaries(names, kids, max_size=4), max_leaves=25)


def build(root: Path, node: object, clock: list[int]) -> list[Path]:
    """Create `node` at `root`; returns the regular files made."""
    made: list[Path] = []
    if isinstance(node, dict):
        root.mkdir()
        for name, child in node.items():
            made += build(root / name, child, clock)
        root.chmod(0o1777 if len(node) == 3 else 0o755)
    elif node[0] == "file":  # type: ignore[index]
        root.write_bytes(node[1])  # type: ignore[index]
        root.chmod(node[2])  # type: ignore[index]
        made.append(root)
    else:
        os.symlink(node[1], root)  # type: ignore[index]
    clock[0] += 7919
    os.utime(root, (clock[0], clock[0]), follow_symlinks=False)
    return made


def snapshot(root: Path) -> list[tuple[object, ...]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            body = (Path(path).read_bytes() if stat.S_ISREG(st_.st_mode)
                    else os.readlink(path) if stat.S_ISLNK(st_.st_mode) else None)
            out.append((os.path.relpath(path, root), st_.st_mode, st_.st_nlink,
                        st_.st_mtime_ns, body))
    return sorted(out)


@needs_root
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(names, trees, max_size=5), links=st.lists(st.integers(0, 50),
                                                                      max_size=3))
def test_dir_to_tar_to_dir_is_the_identity(tree: dict[str, object], links: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        made = build(src, tree, [1_000_000_000])
        for i, n in enumerate(links):
            if made:
                os.link(made[n % len(made)], src / f"hardlink-{i}")
        os.utime(src, (0, 0))
        blob = io.BytesIO()
        write_layer(src, blob, Compression.GZIP)
        blob.seek(0)
        extract_layer(open_decompressed(blob), Path(tmp) / "dst")
        assert snapshot(Path(tmp) / "dst") == snapshot(src)
        again = io.BytesIO()
        write_layer(Path(tmp) / "dst", again, Compression.GZIP)
        assert again.getvalue() == blob.getvalue()
