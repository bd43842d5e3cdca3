"""The README's Python API example, run as written: build, save, load into another store."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from treeutil import need_root

from layerbuild.archive.sources import TarSource
from layerbuild.store import Store
from layerbuild.validate import validate_archive

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The Python block between the README's api-example markers."""
    text = README.read_text()
    found = re.search(r"<!-- api-example -->\s*```python\n(.*?)```\s*<!-- /api-example -->",
                      text, re.S)
    assert found, "README.md has no api-example block"
    return found.group(1)


def _run_example(workdir: Path, code: str) -> str:
    """Run the example in `workdir` (holding `store` with `base`), with an `app` to build."""
    (workdir / "app").mkdir()
    (workdir / "app/Buildfile").write_text("FROM base\nRUN echo built > /hello\n"
                                           'CMD ["cat", "/hello"]\n')
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_readme_example_builds_saves_and_loads(lb, base: str, store_root: Path,
                                                   tmp_path: Path) -> None:
    need_root()
    assert store_root == tmp_path / "store"  # the store the example names
    out = _run_example(tmp_path, readme_example())
    image_id, same = out.split()
    assert image_id.startswith("sha256:") and same == "True"
    assert str(Store(store_root).get_image("app:1").id) == image_id
    (saved,) = validate_archive(TarSource(tmp_path / "app.tar"))
    assert str(saved.id) == image_id
    other = Store(tmp_path / "other-store")
    assert str(other.get_image("app:1").id) == image_id
    assert lb("images", "-q").stdout.split().count(image_id[7:19]) == 1


def test_docker_loads_what_the_example_saved(lb, base: str, docker, tmp_path: Path) -> None:
    need_root()
    name = docker.name("api")
    out = _run_example(tmp_path, readme_example().replace('"app:1"', repr(name)))
    image_id = out.split()[0]
    loaded = docker("load", "-i", str(tmp_path / "app.tar")).stdout
    assert f"Loaded image: {name}" in loaded
    assert docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip() == image_id
    ran = docker("run", "--rm", "--network", "none", name).stdout
    assert ran == "built\n"
