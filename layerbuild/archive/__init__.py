"""Image archives in and out: `load`, `save`, and `rootfs` import, each loaded on its own (a
save loads none of the loading code)."""
