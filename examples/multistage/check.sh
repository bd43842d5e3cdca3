#!/bin/sh
# Checks the build stage's output; used by the `test` stage (layerbuild build --target test).
set -eu
summary=$1
[ "$(wc -l < "$summary")" -eq 2 ] || { echo "expected 2 cities"; exit 1; }
grep -q '^berlin   min   1.5  max  24.5  mean  11.5$' "$summary" || { echo "berlin is wrong"; exit 1; }
grep -q '^lisbon ' "$summary" || { echo "lisbon is missing"; exit 1; }
echo "summary ok"
