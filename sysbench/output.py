"""Where sysbench writes a file (`run -o`, `report --html/--png`, a calibration): the rules.

- `-` is standard output.
- A regular file or a new path is written atomically: a temporary file in the same folder,
  fsync, rename over the target, so a reader sees the old document or the new one, never half
  of one. The new file keeps the mode of the file it replaces (a new one gets 0666 less the
  umask, as `open` would give it).
- Through a symlink the target is replaced and the link is kept. A file with other hard links
  is replaced under this name only: its other names keep the old document (as with any atomic
  save; writing it in place would give up atomicity).
- Anything else (a FIFO, a character device, /dev/stdout, /dev/fd/N from `>(cmd)`) is not ours
  to replace: the document is streamed into it.

`check_writable` finds an unusable path before a run starts, so that a long run is not
thrown away at the end.
"""
from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import tempfile
from pathlib import Path

STDOUT = "-"
# Views of open files: never renamed over, even when they resolve to a regular file (/dev/stdout
# of a shell redirected to a file is that file, and the shell still holds it open).
_STREAM_ROOTS = ("/proc/", "/dev/fd/", "/dev/stdin", "/dev/stdout", "/dev/stderr")
_MAX_LINKS = 40


class OutputError(Exception):
    """The path cannot be written; str() is one line naming it."""


def _target(path: Path) -> Path:
    """The file a write lands in: the end of a symlink chain (a dangling link's destination)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _links(path: Path) -> list[Path]:
    """The path and every hop of its symlink chain, absolute."""
    hops = [path.absolute()]
    while hops[-1].is_symlink() and len(hops) < _MAX_LINKS:
        hops.append(hops[-1].parent / os.readlink(hops[-1]))
    return hops


def _is_stream(path: Path) -> bool:
    if str(path) == STDOUT:
        return True
    if any(str(hop).startswith(_STREAM_ROOTS) for hop in _links(path)):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # a new path (or a dangling link): a regular file will be made
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Raise OutputError (one line) when `path` cannot be written; create nothing."""
    path = Path(path)
    if str(path) == STDOUT:
        return
    target = _target(path)
    if _is_stream(path):
        # Never open a FIFO here: a reader would see our close as the end of the stream. The
        # kernel follows /proc's links (a pipe's "pipe:[N]" has no path of its own).
        if not os.path.exists(path):
            raise OutputError(f"{path}: cannot write the {what}: no such device or file")
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path}: cannot write the {what}: permission denied")
        return
    if target.is_dir():
        raise OutputError(f"{path}: cannot write the {what}: it is a directory")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"{path}: cannot write the {what}: the file is read-only")
    _check_folder(target.parent, path, what)


def check_folder(folder: str | os.PathLike, what: str = "output") -> None:
    """Raise OutputError (one line) when files cannot be written into `folder` (made if missing)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: cannot write the {what}: it is not a directory")
    _check_folder(folder, folder, what)


def _check_folder(folder: Path, path: Path, what: str) -> None:
    existing = folder
    while not existing.exists():  # the folders a write will create
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{path}: cannot write the {what}: {existing} is not a directory")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: cannot write the {what}: cannot create folders in {existing}")
        return
    try:  # the real test: os.access does not know read-only mounts' quirks or ACLs
        fd, probe = tempfile.mkstemp(prefix=".sysbench.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what}: {_why(exc)}") from None
    os.close(fd)
    os.unlink(probe)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` by the rules above. OSError on failure; no partial file is left behind."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with writing(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """A binary handle that writes `path` by the rules above: what is written reaches a regular
    file only when the block ends without an exception (then atomically); on an exception the
    temporary file is removed and the target is untouched."""
    path = Path(path)
    if str(path) == STDOUT:
        sys.stdout.flush()
        stream = getattr(sys.stdout, "buffer", None)
        if stream is None:  # a text-only stdout (a test runner's capture)
            buffer = io.BytesIO()
            yield buffer
            sys.stdout.write(buffer.getvalue().decode("utf-8"))
        else:
            yield stream
        sys.stdout.flush()
        return
    if _is_stream(path):
        with open(path, "wb") as handle:
            yield handle
        return
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            # mkstemp makes 0600; give the file the mode `open` would have (or the old file's)
            os.fchmod(handle.fileno(), stat.S_IMODE(old.st_mode) if old else 0o666 & ~_umask())
            if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:  # root rewriting someone's file: it stays theirs
                    os.fchown(handle.fileno(), old.st_uid, old.st_gid)
                except OSError:
                    pass
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); best effort where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
