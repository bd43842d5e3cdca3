#!/bin/sh
# Prints the greeting set by the Buildfile's ENV, and who runs it.
echo "$GREETING! (running as uid $(id -u) on $(uname -m))"
