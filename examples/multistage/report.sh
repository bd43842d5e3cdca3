#!/bin/busybox sh
# The runtime image has no /bin/sh, only /bin/busybox: this script runs in busybox's shell.
echo "Temperature report (built $(cat /usr/share/report/built-at))"
cat /usr/share/report/summary.txt
