"""The Python API's parts that need no root: Buildfile discovery, epochs, outputs, stores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import layerbuild
from layerbuild import api
from layerbuild.errors import ImageNotFound, LayerbuildError
from layerbuild.store import Store


def test_the_buildfile_is_found_as_the_cli_finds_it(tmp_path: Path) -> None:
    for name in ("Dockerfile", "Buildfile.j2", "Buildfile"):
        (tmp_path / name).write_text("FROM scratch\n")
        assert api.find_buildfile(tmp_path) == tmp_path / name
    assert api.find_buildfile(tmp_path, "other/file") == Path("other/file")
    assert api.find_buildfile(tmp_path, "-") == Path("/dev/stdin")


def test_a_context_without_a_buildfile_names_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "Buildfile").mkdir()  # not a file
    with pytest.raises(LayerbuildError, match=r"no Buildfile \(or Dockerfile\) in .*; use -f"):
        api.find_buildfile(tmp_path)


def test_the_epoch_comes_from_the_argument_else_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert api.resolve_epoch() is None
    assert api.resolve_epoch("") is None
    assert api.resolve_epoch(0) == 0
    assert api.resolve_epoch("1700000000") == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "42")
    assert api.resolve_epoch() == 42
    assert api.resolve_epoch("") == 42
    assert api.resolve_epoch(7) == 7


@pytest.mark.parametrize("value", ["soon", "1.5", " "])
def test_an_epoch_that_is_not_a_number_is_an_error(value: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    with pytest.raises(LayerbuildError, match="SOURCE_DATE_EPOCH must be an integer"):
        api.resolve_epoch(value)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(LayerbuildError, match=f"not {value!r}"):
        api.resolve_epoch()


def test_outputs_may_be_given_as_strings() -> None:
    assert api._output("type=tar,dest=out.tar") == layerbuild.Output("tar", "out.tar")
    assert api._output("rootfs") == layerbuild.Output("local", "rootfs")
    given = layerbuild.Output("oci", "layout")
    assert api._output(given) is given


def test_a_bad_output_fails_before_anything_is_built(tmp_path: Path) -> None:
    (tmp_path / "Buildfile").write_text("FROM scratch\n")
    with pytest.raises(LayerbuildError, match="unknown type 'zip'"):
        api.build(tmp_path, outputs=["type=zip,dest=x"], store=tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_store_may_be_a_store_a_path_or_the_default(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    opened = Store(tmp_path / "a")
    assert api._store(opened) is opened
    assert api._store(str(tmp_path / "b")).root == tmp_path / "b"
    assert api._store(tmp_path / "c").root == tmp_path / "c"
    monkeypatch.setenv("LAYERBUILD_ROOT", str(tmp_path / "d"))
    assert api._store(None).root == tmp_path / "d"
    assert api.open_store().root == tmp_path / "d"
    assert (tmp_path / "d/image/overlay2/imagedb").is_dir()


def test_opening_a_store_removes_debris(tmp_path: Path) -> None:
    store = Store(tmp_path)
    (store.tmp / "123-dead").mkdir()  # a staging dir no live process holds
    api.open_store(tmp_path)
    assert list(store.tmp.iterdir()) == []


def test_missing_images_are_reported_by_name(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound):
        api.inspect("nothing:here", store=tmp_path)
    with pytest.raises(ImageNotFound):
        api.save(["nothing:here"], tmp_path / "out.tar", store=tmp_path)
    assert not (tmp_path / "out.tar").exists()


def test_every_exported_name_resolves_and_says_what_it_is() -> None:
    for name in layerbuild.__all__:
        value = getattr(layerbuild, name)
        assert value.__doc__, name
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError):
        _ = layerbuild.no_such_name  # type: ignore[attr-defined]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    return {m for m in out.split() if m.startswith("layerbuild")}


def test_importing_the_package_or_the_cli_loads_no_build_code() -> None:
    assert _loaded_after("import layerbuild") == {"layerbuild"}
    loaded = _loaded_after("import layerbuild.cli")
    assert "layerbuild.api" in loaded
    assert not {m for m in loaded if m.startswith(("layerbuild.builder", "layerbuild.archive",
                                                   "layerbuild.progress"))}
