"""What ADD, COPY and WORKDIR put in the layers of a real build, as BuildKit does: ADD unpacks
only what is a tar archive (by content), hard links inside one copied path are tar hard links
in the layer, and WORKDIR of a directory that is there makes an empty layer.

The same cases are compared with Docker 20.10's BuildKit in tests/data/conformance/files/."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import tarfile
from pathlib import Path

import zstandard

from layerbuild.digest import EMPTY_LAYER_DIFF_ID
from layerbuild.layer import open_decompressed

Member = tuple[str, str, str]
"""A layer tar entry: name, type flag, link name."""


def _tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_500_000_000
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.LNKTYPE, target, 1_500_000_000
            tar.addfile(info)
    return buf.getvalue()


def _v7(data: bytes) -> bytes:
    """`data` (one ustar header first) as a 7th Edition tar: no magic, a good checksum."""
    raw = bytearray(data)
    raw[257:329] = bytes(72)
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    return bytes(raw)


def _layers(lb, name: str, tmp_path: Path) -> tuple[list[dict], list[str], list[list[Member]]]:
    """The image's history, diff_ids and the entries of each of its layers, as saved."""
    archive = tmp_path / f"{name.replace(':', '-')}.tar"
    lb("save", name, "-o", str(archive))
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        entries = []
        for blob in manifest["Layers"]:
            with tarfile.open(fileobj=open_decompressed(tar.extractfile(blob)),  # type: ignore[arg-type]
                              mode="r|") as layer:
                entries.append([(m.name, m.type.decode(), m.linkname) for m in layer])
    return config["history"], config["rootfs"]["diff_ids"], entries


def test_add_unpacks_archives_only(lb, base: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    raw = {"notatar.txt.gz": gzip.compress(b"hello, not a tar\n"),
           "text.xz": lzma.compress(b"xz text\n"), "empty.gz": gzip.compress(b""),
           "ends.tar": bytes(1024)}
    for file, data in raw.items():
        (ctx / file).write_bytes(data)
    (ctx / "real.tar.gz").write_bytes(gzip.compress(_tar({"gz/tool": b"tool\n"},
                                                         {"gz/tool-hard": "gz/tool"})))
    (ctx / "real.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(
        _tar({"zst/f": b"zstd\n"})))
    (ctx / "v7.tar").write_bytes(_v7(_tar({"v7/f": b"v7\n"})))
    (ctx / "Buildfile").write_text(f"FROM base\nADD {' '.join(raw)} /raw/\n"
                                   "ADD real.tar.gz real.tar.zst v7.tar /unpacked/\n")
    out = tmp_path / "out"
    lb("build", "-t", "add:1", "-o", f"type=local,dest={out}", str(ctx))
    for file, data in raw.items():
        assert (out / "raw" / file).read_bytes() == data, file
    # zstd too, as current BuildKit does (BuildKit 0.8, Docker 20.10's, copied it as is)
    assert sorted(os.listdir(out / "unpacked")) == ["gz", "v7", "zst"]
    assert (out / "unpacked/gz/tool-hard").stat().st_ino == (out / "unpacked/gz/tool").stat(
        ).st_ino
    _history, _ids, entries = _layers(lb, "add:1", tmp_path)
    assert ("unpacked/gz/tool-hard", "1", "unpacked/gz/tool") in entries[-1]


HARDLINKS = """\
FROM base AS made
RUN mkdir -p /out/h && echo made > /out/h/a && ln /out/h/a /out/h/b
FROM base
COPY hl /hl/
COPY p1 p2 /pair/
COPY *.lnk /wild/
COPY --from=made /out/h /from-dir/
COPY --from=made /out/h/a /out/h/b /from-pair/
COPY --from=made /out/h/* /from-wild/
"""


def _linked_context(ctx: Path, first: str) -> None:
    (ctx / "hl/sub").mkdir(parents=True)
    names = ["hl/a", "hl/sub/b"] if first == "a" else ["hl/sub/b", "hl/a"]
    (ctx / names[0]).write_text("linked\n")
    os.link(ctx / names[0], ctx / names[1])
    for one, two in (("p1", "p2"), ("w1.lnk", "w2.lnk")):
        (ctx / one).write_text(f"{one}\n")
        os.link(ctx / one, ctx / two)
    (ctx / "Buildfile").write_text(HARDLINKS)
    for path in (*ctx.rglob("*"), ctx):
        os.utime(path, (1_500_000_000, 1_500_000_000), follow_symlinks=False)


def test_hard_links_in_one_source_are_tar_hard_links(lb, base: str, tmp_path: Path) -> None:
    """Inside one copied path (a directory) links are kept; files named apart (two sources,
    a wildcard's matches) are copies, as each is a copy of its own in BuildKit."""
    ctx = tmp_path / "ctx"
    _linked_context(ctx, "a")
    lb("build", "-t", "links:1", str(ctx))
    _history, diff_ids, entries = _layers(lb, "links:1", tmp_path)
    hl, pair, wild, from_dir, from_pair, from_wild = entries[-6:]
    assert hl == [("hl", "5", ""), ("hl/a", "0", ""), ("hl/sub", "5", ""),
                  ("hl/sub/b", "1", "hl/a")]
    assert pair == [("pair", "5", ""), ("pair/p1", "0", ""), ("pair/p2", "0", "")]
    assert wild == [("wild", "5", ""), ("wild/w1.lnk", "0", ""), ("wild/w2.lnk", "0", "")]
    assert from_dir == [("from-dir", "5", ""), ("from-dir/a", "0", ""),
                        ("from-dir/b", "1", "from-dir/a")]
    assert [t for _n, t, _l in from_pair + from_wild] == ["5", "0", "0", "5", "0", "0"]

    # The layers of context files do not depend on the run, nor on which link came first.
    again = tmp_path / "again"
    _linked_context(again, "b")
    lb("build", "--no-cache", "-t", "links:2", str(again))
    _history, diff_ids_again, _entries = _layers(lb, "links:2", tmp_path)
    assert diff_ids_again[-6:-3] == diff_ids[-6:-3]


def test_workdir_of_an_existing_directory_makes_an_empty_layer(lb, base: str,
                                                               tmp_path: Path) -> None:
    """BuildKit (0.8 and current) makes WORKDIR's directory with a mkdir step: on a directory
    that is there, its layer is the empty one; `WORKDIR /` makes no layer at all."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text("FROM base\nRUN mkdir -p /srv/app\nWORKDIR /srv/app\n"
                                   "WORKDIR /home/user\nWORKDIR /srv/new\nWORKDIR /\n"
                                   "CMD [\"pwd\"]\n")
    lb("build", "-t", "wd:1", str(ctx))
    history, diff_ids, entries = _layers(lb, "wd:1", tmp_path)
    steps = [(h["created_by"], bool(h.get("empty_layer"))) for h in history[1:]]
    assert steps == [("RUN /bin/sh -c mkdir -p /srv/app # buildkit", False),
                     ("WORKDIR /srv/app", False), ("WORKDIR /home/user", False),
                     ("WORKDIR /srv/new", False), ("WORKDIR /", True),
                     ('CMD ["pwd"]', True)]
    assert diff_ids[-3:-1] == [f"sha256:{EMPTY_LAYER_DIFF_ID.hex}"] * 2
    assert entries[-1] == [("srv", "5", ""), ("srv/new", "5", "")]
