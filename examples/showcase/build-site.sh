#!/bin/sh
# The "build" of the builder stage: renders the site for one version into an output dir.
# Usage: build-site.sh VERSION OUTDIR
set -eu
version=$1 out=$2
mkdir -p "$out"
sed "s/@VERSION@/$version/g" site/index.html.in > "$out/index.html"
echo "$version" > "$out/version.txt"
(cd "$out" && sha256sum index.html version.txt > SHA256SUMS)
