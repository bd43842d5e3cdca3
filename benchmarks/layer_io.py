"""Layer export (directory -> gzip blob) and import (blob -> directory) throughput.

Builds a test tree (default ~500 MB: a few large files, some medium ones and thousands of small
ones, half random and half compressible), then times, each in a fresh process so that peak
memory (max RSS) is its own:

    layerbuild export   write_layer(dir, gzip)         diff_id + blob digest in one pass
    layerbuild import   extract_layer(gunzip(blob))    with diff_id check
    tar | gzip -6       the usual shell pipeline
    tar | sha256sum     hashing alone, for scale

Usage: python benchmarks/layer_io.py [--size-mb 500] [--workdir /tmp/lbbench] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path


def make_tree(root: Path, size_mb: int) -> int:
    """Fill `root` with about `size_mb` MB of files; returns the bytes written."""
    rng = random.Random(42)
    words = b" ".join(rng.choice([b"layer", b"image", b"build", b"cache", b"store", b"tar"])
                      for _ in range(4096))
    total, target = 0, size_mb * 1_000_000
    plan = [(4, 0.5), (40, 0.3), (4000, 0.2)]  # (file count, share of the bytes)
    for count, share in plan:
        each = max(1, int(target * share / count))
        for i in range(count):
            d = root / f"d{count}" / f"sub{i % 50}"
            d.mkdir(parents=True, exist_ok=True)
            with open(d / f"f{i}", "wb") as f:  # in pieces: this process must stay small
                left = each
                while left:
                    n = min(left, 1 << 20)
                    f.write(rng.randbytes(n) if i % 2 else (words * (n // len(words) + 1))[:n])
                    left -= n
            total += each
    return total


def run_measured(code: str) -> tuple[float, float]:
    """Run Python code in a fresh process; returns (seconds, peak RSS in MB)."""
    wrapper = (f"import time, resource\nt=time.perf_counter()\n{code}\n"
               "print(time.perf_counter()-t, "
               "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    out = subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True,
                         text=True).stdout.split()
    return float(out[-2]), float(out[-1])


def run_shell(cmd: str) -> tuple[float, float]:
    """Time a shell pipeline; peak RSS of its largest process (GNU time)."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "bash", "-c", cmd], check=True,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    return elapsed, int(proc.stderr.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--workdir", default="/tmp/lbbench")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    tree, blob, out = work / "tree", work / "layer.tar.gz", work / "out"
    tree.mkdir(parents=True)
    size = make_tree(tree, args.size_mb)
    subprocess.run(["sync"], check=True)
    mb = size / 1e6
    results = {}
    results["layerbuild export (dir -> gzip)"] = run_measured(
        "from pathlib import Path\nfrom layerbuild.layer import Compression, write_layer\n"
        f"with open({str(blob)!r}, 'wb') as f:\n"
        f"    write_layer(Path({str(tree)!r}), f, Compression.GZIP)")
    results["layerbuild import (gzip -> dir)"] = run_measured(
        "from pathlib import Path\nfrom layerbuild.layer import extract_layer, open_decompressed\n"
        f"with open({str(blob)!r}, 'rb') as f:\n"
        f"    extract_layer(open_decompressed(f), Path({str(out)!r}))")
    results["tar | gzip -6"] = run_shell(f"tar -C {tree} -cf - . | gzip -6 > /dev/null")
    results["tar | sha256sum"] = run_shell(f"tar -C {tree} -cf - . | sha256sum > /dev/null")
    print(f"tree: {mb:.0f} MB in {sum(1 for _ in tree.rglob('*'))} entries, "
          f"gzip blob {blob.stat().st_size / 1e6:.0f} MB")
    print(f"{'operation':34} {'seconds':>8} {'MB/s':>8} {'peak RSS MB':>12}")
    for name, (secs, rss) in results.items():
        print(f"{name:34} {secs:8.2f} {mb / secs:8.0f} {rss:12.0f}")
    print(json.dumps({k: {"mb_per_s": round(mb / v[0]), "rss_mb": round(v[1])}
                      for k, v in results.items()}))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
