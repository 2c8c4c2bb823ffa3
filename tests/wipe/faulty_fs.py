#!/usr/bin/env python3
"""A FUSE file system with one file, `disk.img`, whose reads and writes fail where told.

Safehand's wipe tests use it to give the wipe engine real I/O errors from the kernel: no
device-mapper is needed. The file's bytes live in BACKING (a sparse file); every read and
write goes straight to these handlers (direct_io), so the engine sees exactly what we return.

    faulty_fs.py MOUNTPOINT BACKING [--read-error A:B] [--short-read A:B]
                                    [--write-error A:B] [--short-write A:B]

A:B are byte offsets (end exclusive). A read or write touching a range:
  --read-error / --write-error  fails with EIO
  --short-read                  returns no bytes (end of data before the end of the file)
  --short-write                 accepts no bytes
The process stays in the foreground until the file system is unmounted.
"""
import argparse
import errno
import os
import stat
import sys
import threading

from fuse import FUSE, FuseOSError, Operations

NAME = "/disk.img"


def span(text):
    a, b = text.split(":")
    return int(a), int(b)


class Faulty(Operations):
    def __init__(self, backing, faults):
        self.fd = os.open(backing, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.faults = faults
        self.lock = threading.Lock()

    def hit(self, kind, offset, length):
        return any(a < offset + length and offset < b for a, b in self.faults.get(kind, []))

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == NAME:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", NAME[1:]]

    def open(self, path, fi):
        if path != NAME:
            raise FuseOSError(errno.ENOENT)
        fi.direct_io = True
        return 0

    def read(self, path, size, offset, fi):
        if self.hit("read-error", offset, size):
            raise FuseOSError(errno.EIO)
        if self.hit("short-read", offset, size):
            return b""
        with self.lock:
            return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fi):
        if self.hit("write-error", offset, len(data)):
            raise FuseOSError(errno.EIO)
        if self.hit("short-write", offset, len(data)):
            return 0
        with self.lock:
            return os.pwrite(self.fd, data, offset)

    def truncate(self, path, length, fh=None):
        raise FuseOSError(errno.EPERM)

    def fsync(self, path, datasync, fi):
        os.fsync(self.fd)
        return 0

    def flush(self, path, fi):
        return 0

    def release(self, path, fi):
        return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mountpoint")
    p.add_argument("backing")
    for kind in ("read-error", "short-read", "write-error", "short-write"):
        p.add_argument("--" + kind, action="append", type=span, default=[])
    args = p.parse_args()
    faults = {k: getattr(args, k.replace("-", "_")) for k in
              ("read-error", "short-read", "write-error", "short-write")}
    FUSE(Faulty(args.backing, faults), args.mountpoint, foreground=True, raw_fi=True,
         nothreads=False, allow_other=False)


if __name__ == "__main__":
    sys.exit(main())
