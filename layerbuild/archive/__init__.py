"""Image archives in and out: load, save, and rootfs import."""

from layerbuild.archive.load import find_images, open_archive, store_images
from layerbuild.archive.rootfs import import_rootfs
from layerbuild.archive.save import plan_archive, save, write_archive

__all__ = ["find_images", "import_rootfs", "open_archive", "plan_archive", "save",
           "store_images", "write_archive"]
