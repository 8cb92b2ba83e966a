"""The job store of ``w2s-generate generate``: ``--out``, the JSON-lines file results are appended to.

A run skips every id that ``--out`` already holds and appends one whole line per answered prompt, so
that a rerun resumes where an interrupted run stopped. One run at a time holds the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from .messages import PROG, report
from .prompts import PromptRecord, file_kind

#: How every line of --out starts (``json.dumps`` of a result, "id" first).
RESULT_START = b'{"id": '


class OutputError(Exception):
    """``--out`` cannot be used, or stopped taking results; the message names the path and the fix."""


# --------------------------------------------------------------------------- reading results (resume)


def read_done(path: Path) -> tuple[dict, dict | None]:
    """The prompt of each id already in the results file, and its last result.

    An incomplete last line (a run killed while writing it) is cut off so that appending stays valid;
    other unreadable lines are reported and ignored (their prompts are answered again). A file with
    content but no result at all is not one this program wrote: OutputError, and it is left as it is.
    """
    if not path.exists():
        return {}, None
    raw = path.read_bytes()
    start = raw.rfind(b"\n") + 1
    tail, complete_tail = raw[start:], False
    if tail:
        try:
            json.loads(tail)
        except ValueError:
            pass
        else:
            complete_tail = True
    body = raw + b"\n" if complete_tail else raw[:start]
    done: dict = {}
    last = None
    unreadable = []
    # Lines end at b"\n" only: a result may hold U+2028 or U+0085, which str.splitlines would split on.
    for line, chunk in enumerate(body.split(b"\n"), start=1):
        if not chunk.strip():
            continue
        try:
            result = json.loads(chunk.decode("utf-8"))
            done[result["id"]] = result.get("prompt")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            unreadable.append(line)
            continue
        last = result
    cut_result = tail and not complete_tail and RESULT_START.startswith(tail[: len(RESULT_START)])
    if not done and (unreadable or (tail and not cut_result)):
        raise OutputError(
            f"--out {path} is not a results file (it holds {len(raw)} bytes and no result line): it is left as "
            f"it is; give another --out (a new file, or one that {PROG} generate wrote)"
        )
    if complete_tail:
        with open(path, "ab") as handle:
            handle.write(b"\n")
    elif tail:
        with open(path, "r+b") as handle:
            handle.truncate(start)
        report(f"{path}: removed an incomplete last line ({len(tail)} bytes) left by an interrupted run")
    for line in unreadable:
        report(f"{path}: line {line} is not a result (ignored; its prompt will be answered again)")
    return done, last


def warn_about_existing(
    records: list[PromptRecord], done: dict, last: dict | None, method: str, settings: dict, out_path: Path
) -> None:
    """Warn when --out already holds other prompts under the same ids, or results of other settings."""
    renamed = [r for r in records if r.id in done and done[r.id] != r.prompt]
    if renamed:
        ids = ", ".join(json.dumps(r.id) for r in renamed[:5]) + (", ..." if len(renamed) > 5 else "")
        report(
            f"warning: {len(renamed)} id(s) already in {out_path} with another prompt ({ids}); they are skipped "
            "all the same. Give each prompt its own id, or write to another --out."
        )
    if last is None or all(r.id in done for r in records):
        return
    old_settings = last.get("settings")
    old = {"method": last.get("method"), **(old_settings if isinstance(old_settings, dict) else {})}
    old.pop("seed", None)
    new = {"method": method, **settings}
    if old != new:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        report(
            f"warning: {out_path} holds results made with other settings ({', '.join(keys)}); "
            "new results are appended to it all the same"
        )


# --------------------------------------------------------------------------- writing results


def result_line(
    record: PromptRecord,
    text: Any,
    log_ratio: Any,
    method: str,
    settings: dict,
    cost: dict | None = None,
) -> str:
    """One line of --out as text; ValueError when the result is not one to keep."""
    if not isinstance(text, str):
        raise ValueError(f"the response is a {type(text).__name__}, not text: {text!r:.80}")
    if log_ratio is not None and not math.isfinite(log_ratio):
        raise ValueError(
            f"the pair scored the response {log_ratio}: a log-ratio must be a finite number (weights or "
            "weak models that produce NaN/inf?); not written"
        )
    result: dict[str, Any] = {"id": record.id, "prompt": record.prompt}
    if record.weak_prompt is not None:
        result["weak_prompt"] = record.weak_prompt
    result.update(response=text, method=method)
    if log_ratio is not None:
        result["log_ratio"] = log_ratio
    if cost is not None:
        result["cost"] = cost
    result["settings"] = settings
    line = json.dumps(result, ensure_ascii=False, allow_nan=False)
    line.encode("utf-8")  # UnicodeEncodeError (a ValueError) before anything is written
    return line


class ResultsFile:
    """``--out`` for one run: a regular file, locked while the run holds it, appended one whole line at a time.

    The lock (``flock`` on the file itself, not waited for) makes a second run on the same file refuse
    at once instead of answering the same prompts again. A line that cannot be written in full is
    taken back and stops the run (OutputError): nothing is buffered, and the file stays whole. A file
    this run created and never wrote to is removed on close unless ``keep()`` was called. In a run:
    ``with ResultsFile(path) as results``, then ``results.read_done()``, ``results.keep()`` once the
    run gets as far as writing, and ``results.append(line)`` for each result.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.write_error: OSError | None = None  # why the file cannot be written, when it cannot
        self._fd: int | None = None
        self._created = False
        self._keep = False

    def __enter__(self) -> ResultsFile:
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def open(self) -> ResultsFile:
        """Check, open (creating it if needed) and lock the file; OutputError says why it cannot be used."""
        check_output_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot write --out {self.path}: {error.strerror or error}") from None
        for _ in range(10):  # a retry only when the file was replaced between opening and locking
            fd = self._open_fd()
            try:
                if self._lock(fd):
                    self._fd = fd
                    return self
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise OutputError(
            f"--out {self.path} keeps being replaced by another process: write to another --out"
        )

    def _open_fd(self) -> int:
        flags = os.O_CLOEXEC | os.O_NONBLOCK  # never wait on a FIFO put there in the meantime
        try:
            fd = os.open(self.path, flags | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666)
            self._created = True
        except FileExistsError:
            self._created = False
            try:
                fd = os.open(self.path, flags | os.O_RDWR | os.O_APPEND)
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise OutputError(f"cannot open --out {self.path}: {error.strerror or error}") from None
                fd = os.open(self.path, flags | os.O_RDONLY)  # enough to resume a run with nothing to do
                self.write_error = error
        except OSError as error:
            raise OutputError(f"cannot write --out {self.path}: {error.strerror or error}") from None
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            os.close(fd)
            raise OutputError(_not_regular(self.path, kind))
        return fd

    def _lock(self, fd: int) -> bool:
        """Take the lock on ``fd``; False when the path no longer names that file (take it again)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"--out {self.path} is in use by another run (it holds the file's lock): wait for it to "
                "finish, or write to another --out"
            ) from None
        except OSError as error:  # a file system without locks: go on, and say so
            report(
                f"warning: cannot lock --out {self.path} ({error.strerror}); make sure no other run writes to it"
            )
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def read_done(self) -> tuple[dict, dict | None]:
        """What the file already holds (see ``read_done``)."""
        return read_done(self.path)

    def check_writable(self) -> None:
        """OutputError when results could not be appended (a read-only file)."""
        if self.write_error is not None:
            raise OutputError(
                f"cannot write --out {self.path}: {self.write_error.strerror or self.write_error}"
            )

    def keep(self) -> None:
        """Keep the file on close even if it is empty (the run got as far as writing)."""
        self._keep = True

    def append(self, line: str) -> None:
        """Write ``line`` and a newline, all of it or nothing; OutputError when the file takes no more."""
        assert self._fd is not None, "open() first"
        data = memoryview((line + "\n").encode("utf-8"))
        offset = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, offset)  # take back a part line
            if not isinstance(error, OSError):
                raise
            raise OutputError(
                f"cannot write to --out {self.path}: {error.strerror or error}; the results written before it "
                "are kept, whole: make room (or fix the file) and rerun to resume"
            ) from None

    def close(self) -> None:
        """Release the lock; remove the file if this run created it and wrote nothing."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._created and not self._keep and os.fstat(fd).st_size == 0:
                with contextlib.suppress(OSError):
                    now, held = os.stat(self.path), os.fstat(fd)
                    if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                        self.path.unlink()
        finally:
            os.close(fd)


def check_output_path(path: Path) -> None:
    """OutputError for an ``--out`` that is not, or cannot be, a regular file (checked before reading it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # not there yet (or not reachable): creating it says what is wrong
    if stat.S_ISDIR(mode):
        raise OutputError(f"--out {path} is a folder; give a file name, e.g. {path / 'results.jsonl'}")
    kind = file_kind(mode)
    if kind is not None:
        raise OutputError(_not_regular(path, kind))


def _not_regular(path: Path, kind: str) -> str:
    return (
        f"--out {path} is {kind}, not a regular file: results are appended to a file and read back to resume "
        "a run; give a file name, e.g. results.jsonl"
    )
