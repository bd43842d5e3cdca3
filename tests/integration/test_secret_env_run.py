"""`RUN --mount=type=secret,id=tok,env=TOK` in the real sandbox: the value is in $TOK, the file
is mounted only with a target, and the value is in no layer, config, history or store file."""

from __future__ import annotations

import json
import os
from pathlib import Path

VALUE = "s3cr3t-9f2c"


def _ctx(tmp_path: Path, buildfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Buildfile").write_text(buildfile)
    return ctx


def _top(lb, tag: str) -> Path:
    return Path(json.loads(lb("inspect", tag).stdout)[0]["Store"]["Layers"][-1]["DiffDir"])


def _nowhere_in(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                assert VALUE.encode() not in path.read_bytes(), path


def test_env_gives_the_value_in_the_variable_and_no_file(lb, base: str, tmp_path: Path,
                                                         store_root: Path) -> None:
    secret = tmp_path / "tok"
    secret.write_text(VALUE)
    ctx = _ctx(tmp_path, "FROM base\n"
               "RUN --mount=type=secret,id=tok,env=TOK "
               "echo \"${#TOK} $(test -e /run/secrets/tok && echo file || echo no-file)\" "
               "> /env-only\n"
               "RUN --mount=type=secret,id=tok,env=TOK,target=/etc/tok "
               "test \"$(cat /etc/tok)\" = \"$TOK\" && echo ${#TOK} > /both\n"
               "RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /file-only\n")
    proc = lb("build", "-t", "sec-env:1", "--progress", "plain", "--secret",
              f"id=tok,src={secret}", str(ctx))
    assert VALUE not in proc.stdout + proc.stderr
    layers = [Path(layer["DiffDir"]) for layer in
              json.loads(lb("inspect", "sec-env:1").stdout)[0]["Store"]["Layers"]]
    assert (layers[-3] / "env-only").read_text().split() == [str(len(VALUE)), "no-file"]
    assert (layers[-2] / "both").read_text().strip() == str(len(VALUE))
    assert not (layers[-2] / "etc" / "tok").exists()
    assert (layers[-1] / "file-only").read_text().strip() == str(len(VALUE))
    history = lb("history", "--no-trunc", "sec-env:1").stdout
    assert VALUE not in history
    assert VALUE not in lb("inspect", "sec-env:1").stdout
    _nowhere_in(store_root)


def test_the_value_is_not_part_of_the_cache_key(lb, base: str, tmp_path: Path) -> None:
    secret = tmp_path / "tok"
    secret.write_text(VALUE)
    ctx = _ctx(tmp_path, "FROM base\nRUN --mount=type=secret,id=tok,env=TOK "
               "test -n \"$TOK\" && touch /ran\n")
    lb("build", "--secret", f"id=tok,src={secret}", str(ctx))
    secret.write_text("another")
    again = lb("build", "--progress", "plain", "--secret", f"id=tok,src={secret}", str(ctx))
    assert again.stderr.split("RUN --mount")[1].splitlines()[1] == "  CACHED"
