#!/bin/sh
# Entrypoint of the showcase image. `serve` (the default CMD) runs the web server;
# `info` prints what the build put in the image; anything else is run as a command.
set -eu
case "${1:-serve}" in
  serve)
    echo "showcase $APP_VERSION listening on :$PORT"
    exec httpd -f -p "$PORT" -h "$APP_HOME/www"
    ;;
  info)
    echo "version: $APP_VERSION"
    echo "user: $(id -un) ($(id -u):$(id -g))"
    echo "workdir: $(pwd)"
    echo "page: $(grep -o '<h1>.*</h1>' www/index.html)"
    (cd www && sha256sum -c -s SHA256SUMS) && echo "checksums: ok"
    ;;
  *)
    exec "$@"
    ;;
esac
