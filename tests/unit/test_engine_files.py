"""What ADD, COPY and WORKDIR put in their layers, as BuildKit does, through the engine and the
fake sandbox: ADD unpacks tar archives only (told by content, not name), hard links inside one
copied path stay hard links, and WORKDIR of a directory that is there makes an empty layer
(`WORKDIR /` none at all)."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from enginetools import Bench, new_bench

from layerbuild.digest import EMPTY_LAYER_DIFF_ID, chain_ids
from layerbuild.errors import BuildfileError
from layerbuild.image import Image
from layerbuild.layer import open_decompressed

Member = tuple[str, str, str]
"""A layer tar entry: name, type flag, link name."""


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return new_bench(tmp_path)


def built(bench: Bench, buildfile: str, **request: object) -> Image:
    image = bench.build(buildfile, **request)
    assert image is not None
    return image


def members(bench: Bench, image: Image, index: int = -1) -> list[Member]:
    """The entries of one layer of the image, as its stored blob has them."""
    chain = chain_ids(image.config.diff_ids)[index]
    layer = bench.store.layer(chain)
    assert layer is not None
    with layer.open() as raw, tarfile.open(fileobj=open_decompressed(raw), mode="r|") as tar:
        return [(m.name, m.type.decode(), m.linkname) for m in tar]


def tar_of(files: dict[str, str]) -> bytes:
    """A tar of files owned by this user (so extracting it needs no root)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(text), 1_000_000
            info.uid, info.gid = os.getuid(), os.getgid()
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


# -- ADD: only tar archives are unpacked ----------------------------------------------------

NOT_ARCHIVES = {
    "notatar.txt.gz": gzip.compress(b"hello, not a tar\n"),
    "text.xz": lzma.compress(b"xz text\n"),
    "text.zst": zstandard.ZstdCompressor().compress(b"zstd text\n"),
    "empty.gz": gzip.compress(b""),
    "empty.tar": b"",
    "ends.tar": bytes(1024),
    "plain.tar": b"a text file named like a tar\n",
}


def test_add_copies_a_file_that_is_no_tar_as_it_is(bench: Bench) -> None:
    for name, data in NOT_ARCHIVES.items():
        (bench.context / name).write_bytes(data)
    image = built(bench, f"FROM base\nADD {' '.join(NOT_ARCHIVES)} /raw/\n")
    layer = bench.store.layer(chain_ids(image.config.diff_ids)[-1])
    assert layer is not None
    for name, data in NOT_ARCHIVES.items():
        assert (layer.diff_dir / "raw" / name).read_bytes() == data, name


@pytest.mark.parametrize("name", ["a.tar.gz", "a.tar.xz", "a.tar.zst", "a.tar", "no-suffix"])
def test_add_unpacks_a_tar_whatever_its_name_and_compression(bench: Bench, name: str) -> None:
    """zstd too, as current BuildKit (util/archiveutil) does; BuildKit 0.8 (Docker 20.10)
    copied a .tar.zst as it is."""
    data = tar_of({"pkg/file": "inside\n"})
    packed = {"a.tar.gz": gzip.compress, "a.tar.xz": lzma.compress,
              "a.tar.zst": zstandard.ZstdCompressor().compress}.get(name, lambda d: d)(data)
    (bench.context / name).write_bytes(packed)
    image = built(bench, f"FROM base\nADD {name} /unpacked/\n")
    assert bench.read(image, "/unpacked/pkg/file") == "inside\n"
    assert ("unpacked/" + name, "0", "") not in members(bench, image)


def test_an_archive_cut_short_names_its_line(bench: Bench) -> None:
    (bench.context / "cut.tar.gz").write_bytes(gzip.compress(
        tar_of({"big": "x" * 5000})[:1024]))
    with pytest.raises(BuildfileError) as caught:
        bench.build("FROM base\n\nADD cut.tar.gz /opt/\n")
    message = str(caught.value)
    assert message.startswith(f"{bench.context / 'Buildfile'}:3: ADD: cut.tar.gz: cannot unpack")
    assert "\n" not in message


def test_add_follows_a_context_symlink_to_an_archive_but_not_out_of_the_context(
        bench: Bench, tmp_path: Path) -> None:
    (bench.context / "real.tar").write_bytes(tar_of({"f": "via link\n"}))
    (bench.context / "link.tar").symlink_to("real.tar")
    image = built(bench, "FROM base\nADD link.tar /via/\n")
    assert bench.read(image, "/via/f") == "via link\n"
    outside = tmp_path / "outside.tar"
    outside.write_bytes(tar_of({"secret": "host file\n"}))
    (bench.context / "escape.tar").symlink_to(outside)
    with pytest.raises(BuildfileError, match="leads outside the build context"):
        bench.build("FROM base\nADD *.tar /x/\n")


# -- hard links -----------------------------------------------------------------------------

def linked_context(bench: Bench, first: str = "a") -> None:
    """hl/a and hl/sub/b are one file (made in the order `first` says); p1/p2 and
    w1.lnk/w2.lnk are pairs of links too."""
    (bench.context / "hl/sub").mkdir(parents=True)
    names = ["hl/a", "hl/sub/b"] if first == "a" else ["hl/sub/b", "hl/a"]
    bench.write(names[0], "linked\n", mtime=1_500_000_000)
    os.link(bench.context / names[0], bench.context / names[1])
    for one, two in (("p1", "p2"), ("w1.lnk", "w2.lnk")):
        bench.write(one, f"{one}\n", mtime=1_500_000_000)
        os.link(bench.context / one, bench.context / two)
    for d in ("hl/sub", "hl"):
        os.utime(bench.context / d, (1_500_000_000, 1_500_000_000))


def test_hard_links_inside_one_source_stay_links_in_the_layer(bench: Bench) -> None:
    linked_context(bench)
    image = built(bench, "FROM base\nCOPY hl /hl/\n")
    assert members(bench, image) == [("hl", "5", ""), ("hl/a", "0", ""), ("hl/sub", "5", ""),
                                     ("hl/sub/b", "1", "hl/a")]
    layer = bench.store.layer(chain_ids(image.config.diff_ids)[-1])
    assert layer is not None
    assert (layer.diff_dir / "hl/a").stat().st_ino == (layer.diff_dir / "hl/sub/b").stat().st_ino


def test_files_named_apart_are_copies_as_in_buildkit(bench: Bench) -> None:
    """Two sources of one COPY, or two matches of a wildcard, are two copies in BuildKit (a
    FileOp copy each): the links between them are not kept."""
    linked_context(bench)
    image = built(bench, "FROM base\nCOPY p1 p2 /pair/\nCOPY *.lnk /wild/\n")
    assert members(bench, image, -2) == [("pair", "5", ""), ("pair/p1", "0", ""),
                                         ("pair/p2", "0", "")]
    assert members(bench, image) == [("wild", "5", ""), ("wild/w1.lnk", "0", ""),
                                     ("wild/w2.lnk", "0", "")]


def test_the_linked_layer_is_the_same_whichever_link_came_first(tmp_path: Path) -> None:
    """The tar names the first path in its order as the file: the diff_id depends on the
    tree, not on which link the context made first, nor on the run."""
    diff_ids = set()
    for run, first in enumerate(("a", "b", "a")):
        bench = new_bench(tmp_path / str(run))
        linked_context(bench, first)
        image = built(bench, "FROM base\nCOPY hl /hl/\n")
        assert ("hl/sub/b", "1", "hl/a") in members(bench, image)
        diff_ids.add(image.config.diff_ids[-1])
    assert len(diff_ids) == 1


# -- WORKDIR --------------------------------------------------------------------------------

def layers_of(image: Image) -> list[tuple[str, bool]]:
    return [(h.created_by or "", h.empty_layer) for h in image.config.history[1:]]


def test_workdir_of_an_existing_directory_makes_an_empty_layer(bench: Bench) -> None:
    """BuildKit makes WORKDIR's directory with a mkdir of its own (0.8 and current alike):
    one that is there already leaves that step's layer empty, and `WORKDIR /` makes none."""
    bench.write("one.txt", "1\n")
    image = built(bench, "FROM base\nWORKDIR /etc\nCOPY one.txt /srv/app/\nWORKDIR /srv/app\n"
                         "WORKDIR /srv/new\nWORKDIR /srv/new\nWORKDIR /\n")
    assert layers_of(image) == [("WORKDIR /etc", False), ("COPY one.txt /srv/app/ # buildkit",
                                                           False),
                                ("WORKDIR /srv/app", False), ("WORKDIR /srv/new", False),
                                ("WORKDIR /srv/new", False), ("WORKDIR /", True)]
    diff_ids = image.config.diff_ids
    assert len(diff_ids) == 6  # the base's and five
    assert [diff_ids[i] == EMPTY_LAYER_DIFF_ID for i in (1, 3, 4, 5)] == [True, True, False, True]
    assert members(bench, image, 4) == [("srv", "5", ""), ("srv/new", "5", "")]
    assert image.config.config["WorkingDir"] == "/"


def test_a_relative_workdir_to_the_root_is_no_layer_and_is_cached(bench: Bench) -> None:
    buildfile = "FROM base\nWORKDIR /tmp\nWORKDIR ..\nWORKDIR sub/../x\n"
    first = built(bench, buildfile)
    assert layers_of(first) == [("WORKDIR /tmp", False), ("WORKDIR /", True),
                                ("WORKDIR /x", False)]
    assert first.config.config["WorkingDir"] == "/x"
    second = built(bench, buildfile)
    assert second.id == first.id
    assert bench.sandbox.calls == []
