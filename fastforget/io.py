"""Safe file writes: a result or checkpoint is either complete or absent, outputs are checked before any work, and
one process at a time writes a results file."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastforget.errors import OutputError, ResultsLockedError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode a new file gets under the process umask (what `open` would give it)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a new folder gets under the process umask (what `mkdir` would give it)."""
    return 0o777 & ~_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600 and writers may re-create the file: results are ordinary
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one line and fsync it: a killed run keeps every line it finished."""
    line = json.dumps(record, default=_json_default) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --- outputs checked before any work ------------------------------------------------------------------------------

def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """A folder that will be written (it need not exist yet) can be: fail now, not after an hour of training."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder: give a folder path (it is created if absent)")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {path} lies under {ancestor}, which is a file: give a folder path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fastforget-probe-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{flag} {path} cannot be written ({err.strerror} in {ancestor}): choose a folder you "
                          "can write to") from None
    return path


def check_output_file(path: str | Path, flag: str, *, overwrite: bool = False) -> Path:
    """A results file that will be written: not a folder, its folder writable, and not replaced unasked."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder: give a file path, e.g. {path / 'results.json'}")
    if path.exists() and not overwrite:
        raise OutputError(f"{flag} {path} already exists: pass --overwrite to replace it, or give another path")
    check_output_dir(path.parent, f"{flag} {path}: its folder")
    return path


# --- one writer per results file -----------------------------------------------------------------------------------

@contextmanager
def exclusive_lock(path: str | Path, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the lock of `path` (the lock file `path.lock`) for the block; raise if another process holds it
    (after waiting up to `wait_s` seconds for it: single-cell runs hold it only to append a line).

    The lock is a `flock` on the lock file, so the kernel releases it when its holder exits, however it exits: a
    lock file that a killed run left behind is stale by construction and simply taken over. The holder writes its
    PID, host and command into the file, so that a refused run can say who holds the lock.
    """
    lock = Path(f"{path}.lock")
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"cannot lock {lock} ({err.strerror}): put the output on a file system that "
                                  "supports file locks") from None
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise ResultsLockedError(f"{path} is being written by another fastforget run ({holder}): wait for it "
                                     "to finish, or stop it, then rerun this command to resume") from None
        if _same_file(fd, lock):  # not a lock file that its last holder unlinked after we opened it
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                 "command": " ".join(sys.argv[:8])}).encode())
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # while still holding it; waiting openers then see a new file
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']}, since {since}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def safe_name(text: str) -> str:
    """`text` as one file name: separators and other characters a file system may refuse become `_`
    (`T-shirt/top` would otherwise write into a subfolder)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "_"
