#!/usr/bin/env bash
# A busybox image without any Dockerfile or daemon: make a rootfs, import it, save it, and
# hand the archive to Docker. Needs root, busybox-static and (for the last step) Docker.
# Usage: run.sh [NAME:TAG]   (default example/busybox:1)
set -euo pipefail
name="${1:-example/busybox:1}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LAYERBUILD_ROOT="${LAYERBUILD_ROOT:-$work/store}"

mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
done
echo "hello from an imported rootfs" > "$work/rootfs/etc/motd"
tar --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .

layerbuild import "$work/rootfs.tar" "$name"
layerbuild images
layerbuild save "$name" -o busybox-example.tar
if docker info >/dev/null 2>&1; then
  docker load -i busybox-example.tar
  docker run --rm "$name" cat /etc/motd
fi
