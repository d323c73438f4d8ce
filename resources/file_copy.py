"""Copy one file as cheaply as the filesystem allows: a reflink, an in-kernel copy, or a plain copy.

A restore used to hard-link the store's objects into green's filestore, so a write into a live file was a
write into the stored object, and into every artifact that names it. A copy keeps them apart; a reflink
(FICLONE: btrfs, XFS with reflink, bcachefs) keeps them apart at no cost in bytes, the filesystem copying a
block only when one side writes it; elsewhere ``copy_file_range`` copies inside the kernel (no round trip
through user space). ``CopyMethod`` remembers what failed, so a restore of 20,000 files asks once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
# errors that mean "this filesystem (or kernel) cannot do that", not "this file is broken"
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF,
                          errno.EPERM})


class CopyMethod:
    """The fastest way that has worked so far; counts of files copied each way."""

    def __init__(self) -> None:
        self.reflink = True
        self.kernel_copy = hasattr(os, "copy_file_range")
        self.counts = {"reflinked": 0, "kernel_copied": 0, "copied": 0}

    def copy(self, src: str, dst: str, size: int) -> None:
        """Copy ``src`` to the new file ``dst`` (which must not exist)."""
        fd_in = os.open(src, os.O_RDONLY)
        try:
            fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                if self.reflink and size:
                    try:
                        fcntl.ioctl(fd_out, FICLONE, fd_in)
                        self.counts["reflinked"] += 1
                        return
                    except OSError as exc:
                        if exc.errno not in _UNSUPPORTED:
                            raise
                        self.reflink = False
                if self.kernel_copy and size:
                    try:
                        done = 0
                        while done < size and (n := os.copy_file_range(fd_in, fd_out, size - done)):
                            done += n
                        if done == size:
                            self.counts["kernel_copied"] += 1
                            return
                    except OSError as exc:
                        if exc.errno not in _UNSUPPORTED:
                            raise
                        self.kernel_copy = False
                    os.lseek(fd_in, 0, os.SEEK_SET)
                    os.ftruncate(fd_out, 0)
                    os.lseek(fd_out, 0, os.SEEK_SET)
                with os.fdopen(os.dup(fd_in), "rb") as fin, os.fdopen(os.dup(fd_out), "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                self.counts["copied"] += 1
            finally:
                os.close(fd_out)
        finally:
            os.close(fd_in)
