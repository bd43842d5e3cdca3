"""`layerbuild build`: Buildfiles into images that Docker runs, and clear failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

from layerbuild.archive.sources import DirSource, TarSource
from layerbuild.validate import validate_archive

HELLO = """\
# syntax=docker/dockerfile:1
FROM base
ENV GREETING="hello from a build" \\
    EMPTY=
WORKDIR /app
COPY greet.sh ./
RUN chmod +x greet.sh && echo built > /app/stamp && rm /data/b
USER user
CMD ["/app/greet.sh"]
"""


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if "layerbuild" in line or "/tmp/pytest" in line]


def _context(tmp_path: Path, buildfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Buildfile").write_text(buildfile)
    for name, text in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def test_build_then_docker_runs_it(lb, base: str, docker, tmp_path: Path,
                                   store_root: Path) -> None:
    ctx = _context(tmp_path, HELLO, {"greet.sh": "#!/bin/sh\necho \"$GREETING as $(id -u)\"\n"
                                     "cat /app/stamp\n"})
    name = docker.name("hello")
    out = lb("build", "-t", name, str(ctx))
    assert "Successfully built sha256:" in out.stdout
    assert "[1/7] FROM base" in out.stderr
    info = json.loads(lb("inspect", name).stdout)[0]
    assert info["Config"]["User"] == "user"
    assert info["Config"]["WorkingDir"] == "/app"
    assert "GREETING=hello from a build" in info["Config"]["Env"]
    run_layer = Path(info["Store"]["Layers"][-1]["DiffDir"])
    assert os.stat(run_layer / "data/b").st_rdev == 0  # the deletion is a whiteout
    assert not (run_layer / "proc").exists() and not (run_layer / "etc/hosts").exists()

    archive = tmp_path / "hello.tar"
    lb("save", name, "-o", str(archive))
    validate_archive(TarSource(archive))
    docker("load", "-i", str(archive))
    assert docker("run", "--rm", "--network", "none", name).stdout == (
        "hello from a build as 1000\nbuilt\n")
    assert list((store_root / "tmp").iterdir()) == []
    assert _mounts() == []


def test_failing_run_says_where_and_why(lb, base: str, tmp_path: Path, store_root: Path,
                                        ) -> None:
    ctx = _context(tmp_path, "FROM base\nRUN echo one\nRUN echo about to fail; "
                   "echo details >&2; exit 3\nRUN echo never\n")
    proc = lb("build", "-t", "broken:1", str(ctx), check=False)
    assert proc.returncode == 1
    assert "Buildfile:3" in proc.stderr and "exit code 3" in proc.stderr
    assert "about to fail" in proc.stderr and "details" in proc.stderr
    assert "never" not in proc.stderr.split("exit code 3")[0].split("[3/4]")[-1]
    assert "broken:1" not in lb("images").stdout
    assert list((store_root / "tmp").iterdir()) == []
    assert _mounts() == []


def test_ctrl_c_stops_the_build_like_a_failing_step(lb, base: str, tmp_path: Path,
                                                   store_root: Path) -> None:
    ctx = _context(tmp_path, "FROM base\nCOPY f /f\nRUN echo started && sleep 37 && "
                   "touch /never\n", {"f": "f\n"})
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                             "build", "--progress", "plain", "-t", "stopped:1", str(ctx)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the RUN is running once it has printed
        seen.append(line)
        if "| started" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "layerbuild: interrupted at " in rest and "Buildfile:3: RUN echo started" in rest
    assert "stopped:1" not in lb("images").stdout
    assert list((store_root / "tmp").iterdir()) == []
    assert _mounts() == []
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 37" not in [line.strip() for line in processes.splitlines()]
    (ctx / "Buildfile").write_text("FROM base\nCOPY f /f\nRUN touch /done\n")
    again = lb("build", "--progress", "plain", str(ctx)).stderr
    assert again.split("COPY f /f")[1].splitlines()[1] == "  CACHED"


def test_parse_error_names_file_line_and_instruction(lb, base: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM base\nRUN true\nFROBNICATE now\n")
    proc = lb("build", str(ctx), check=False)
    assert proc.returncode == 1
    assert "Buildfile:3" in proc.stderr and "FROBNICATE" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_multistage_copy_from_and_target(lb, base: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, """\
FROM base AS builder
RUN mkdir -p /out && echo compiled > /out/app && ln -s app /out/link
FROM base AS unused
RUN exit 1
FROM scratch
COPY --from=builder /out/ /bin2/
CMD ["/bin2/app"]
""")
    lb("build", "-t", "multi:1", str(ctx))
    info = json.loads(lb("inspect", "multi:1").stdout)[0]
    top = Path(info["Store"]["Layers"][-1]["DiffDir"])
    assert (top / "bin2/app").read_text() == "compiled\n"
    assert os.readlink(top / "bin2/link") == "app"
    assert len(info["RootFS"]["Layers"]) == 1
    lb("build", "--target", "builder", "-t", "multi:builder", str(ctx))
    built = json.loads(lb("inspect", "multi:builder").stdout)[0]
    assert len(built["RootFS"]["Layers"]) == 2  # the base and the builder's RUN


def test_dockerignore_and_outputs(lb, base: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM base\nCOPY . /src/\n",
                   {"keep.txt": "k", "skip.log": "s", "sub/deep.log": "d", "sub/ok": "o",
                    ".dockerignore": "**/*.log\n"})
    dest = tmp_path / "out.tar"
    lb("build", "-t", "ign:1", "-o", f"type=docker,dest={dest}", str(ctx))
    (_image,) = validate_archive(TarSource(dest))
    info = json.loads(lb("inspect", "ign:1").stdout)[0]
    top = Path(info["Store"]["Layers"][-1]["DiffDir"])
    assert sorted(p.relative_to(top / "src").as_posix() for p in (top / "src").rglob("*")) == [
        ".dockerignore", "Buildfile", "keep.txt", "sub", "sub/ok"]
    local = tmp_path / "rootfs"
    lb("build", "-o", f"type=local,dest={local}", str(ctx))
    assert (local / "src/keep.txt").read_text() == "k"
    assert (local / "bin/busybox").is_file()
    assert not (local / "src/skip.log").exists()
    with tarfile.open(dest) as tar:
        assert "manifest.json" in tar.getnames()
    layout = tmp_path / "layout"
    lb("build", "-o", f"type=oci,dest={layout},tar=false", str(ctx))
    assert len(validate_archive(DirSource(layout))) == 1
    assert (layout / "oci-layout").is_file()
    oci_tar = tmp_path / "oci.tar"
    lb("build", "-o", f"type=oci,dest={oci_tar}", str(ctx))
    assert len(validate_archive(TarSource(oci_tar))) == 1
    rootfs_tar = tmp_path / "rootfs.tar"
    lb("build", "-o", f"type=tar,dest={rootfs_tar}", str(ctx))
    with tarfile.open(rootfs_tar) as tar:
        names = set(tar.getnames())
    assert {"./src/keep.txt", "./bin/busybox"} <= names and "./src/skip.log" not in names


def test_shebang_heredoc_and_from_with_a_variable(lb, base: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, """\
FROM base AS awk
RUN <<EOF
#!/bin/awk -f
BEGIN { print "hi from awk" > "/awk.txt" }
EOF
FROM scratch
ARG SOURCE=base
COPY --from=${SOURCE} /bin/busybox /bb
COPY --from=awk /awk.txt /awk.txt
""")
    lb("build", "-t", "heredoc:1", str(ctx))
    layers = json.loads(lb("inspect", "heredoc:1").stdout)[0]["Store"]["Layers"]
    assert (Path(layers[0]["DiffDir"]) / "bb").is_file()
    assert (Path(layers[1]["DiffDir"]) / "awk.txt").read_text() == "hi from awk\n"
