"""The run dir: the host's private directory (bus and tap sockets, lock, ``bus.json``, the
embedded Redis's socket and password file).

Everything in it is trusted by whoever uses it: the host binds there, ``fxcm attach`` connects
to the ``bus.sock`` it finds there, the tools read the Redis password from there. So a run dir
is used only when nobody but our own uid can have put anything in it:

- it is a real directory, not a symlink (another user could point it anywhere);
- it belongs to our effective uid;
- neither group nor others may write to it;
- its parent does not let others rename it away (writable by others only with the sticky bit,
  as ``/tmp`` is).

Files in it are opened without following symlinks (``O_NOFOLLOW``) and, when written, created
anew (``O_EXCL`` after removing what was there), mode 0600.

Portable: runs on Python 3.7 too (``fxcm attach`` children read the run dir).
"""

from __future__ import annotations

import os
import stat

from protocol.errors import ConfigError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafeRunDir(ConfigError):
    """The run dir, or a file in it, could have been planted by another user."""


def prepare_run_dir(path: str) -> str:
    """Create the run dir (0700) if it is missing, check that only we control it and take
    away group/other read access; returns its absolute path. Raises UnsafeRunDir (one line
    naming ``run_dir``) otherwise."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass  # checked below, whoever made it
    mode = check_run_dir(path)
    if mode & 0o077:
        os.chmod(path, 0o700)
    return path


def check_run_dir(path: str) -> int:
    """Check an existing run dir (see the module docstring); returns its permission bits.

    FileNotFoundError when it does not exist; UnsafeRunDir when it is not safe to use."""
    path = os.path.abspath(path)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeRunDir("run_dir: {} is a symlink (owner uid {}); refusing to follow it: "
                           "give the real directory".format(path, info.st_uid))
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeRunDir("run_dir: {} is not a directory".format(path))
    uid = os.geteuid()
    if info.st_uid != uid:
        raise UnsafeRunDir("run_dir: {} belongs to uid {}, not to us (uid {}): another user may "
                           "have planted it; remove it or choose another run dir".format(
                               path, info.st_uid, uid))
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise UnsafeRunDir("run_dir: {} is writable by group or others (mode {:04o}); make it "
                           "0700 or choose another run dir".format(path, mode))
    parent = os.path.dirname(path)
    parent_mode = os.stat(parent).st_mode
    if parent_mode & stat.S_IWOTH and not parent_mode & stat.S_ISVTX:
        raise UnsafeRunDir("run_dir: its parent {} is writable by others without the sticky "
                           "bit, so they could replace the run dir; choose another place".format(
                               parent))
    return mode


def create_private_file(path: str, data: bytes) -> None:
    """Write ``data`` to a new file (0600) at ``path``, replacing what was there without
    following it if it was a symlink."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def write_private_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) atomically: a new temporary file, then a rename (which
    replaces a symlink at ``path`` rather than following it)."""
    temporary = path + ".tmp"
    create_private_file(temporary, data)
    os.replace(temporary, path)


def open_private(path: str, flags: int) -> int:
    """``os.open`` without following a symlink, creating 0600; the file must be a regular file
    of ours. Returns the descriptor; UnsafeRunDir when it is anything else."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeRunDir("run_dir: {} is a symlink; refusing to follow it".format(
                path)) from None
        raise exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeRunDir("run_dir: {} is not a regular file of ours (uid {}); "
                           "refusing it".format(path, info.st_uid))
    return fd


def read_private_file(path: str) -> bytes:
    """The content of a small private file (a password): ours, mode 0600 or stricter, not a
    symlink. FileNotFoundError when it is missing; UnsafeRunDir when it is not private."""
    fd = open_private(path, os.O_RDONLY)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            raise UnsafeRunDir("{}: readable or writable by others (mode {:04o}); "
                               "refusing it".format(path, mode))
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
