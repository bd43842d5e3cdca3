"""The sandbox's child starts for every RUN and COPY: what it imports is paid each time, so it
keeps to the few stdlib modules it needs (no typing, subprocess, threading, dataclasses…)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2]
HEAVY = ("typing", "subprocess", "threading", "dataclasses", "shutil", "socket", "inspect",
         "pathlib", "tarfile", "json", "re", "base64", "hashlib", "enum", "signal")


def test_the_child_imports_no_heavy_module() -> None:
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "import layerbuild.sandbox.child, layerbuild.sandbox.step, layerbuild.sandbox.copy; "
             f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(PACKAGE_DIR)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], done.stdout
