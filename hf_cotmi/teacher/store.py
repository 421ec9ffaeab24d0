"""The resumable output: JSON Lines appended one whole line per write, read back to skip what is done.

Each finished record becomes one line in the output file (a rationale to train on) or in the rejects
file (no usable rationale), written with a single ``os.write`` on a file opened for appending, so a
crash or SIGKILL leaves whole lines only and loses just the requests still in flight. A line that was
cut short anyway (a full disk, a power cut) is the last one: :func:`read_done` cuts it off and counts it,
so the record is generated again. When every record is done the files are put in input order (written to
a temporary file, then renamed over the old one), so an interrupted and resumed run ends with the same
files as an uninterrupted one.

The settings that change results are stored beside the output (``<output>.settings.json``) and their
hash in every line; :func:`check_settings` refuses to mix settings unless forced. For a server teacher the
file also records the model name its replies report (:data:`REPLIES_FIELD`), which
:class:`ReplyModelCheck` compares every reply with.

Examples:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
    >>> with JsonlAppender(path) as out:
    ...     out.write({"source_index": 1, "input": "b"})
    ...     out.write({"source_index": 0, "input": "a"})
    >>> sorted(read_done(path).records)
    [0, 1]
    >>> sort_by_index(path); path.read_text().splitlines()[0]
    '{"source_index": 0, "input": "a"}'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.jsonfiles import DataFormatError
from ..data.textfiles import decode_text, split_lines, write_text_atomically

__all__ = [
    "INDEX_FIELD",
    "SETTINGS_FIELD",
    "JsonlAppender",
    "OutputInUseError",
    "exclusive_output",
    "DoneRecords",
    "read_done",
    "sort_by_index",
    "settings_id",
    "settings_path",
    "check_settings",
    "check_known_settings",
    "SettingsMismatchError",
    "REPLIES_FIELD",
    "ReplyModelCheck",
]

logger = logging.getLogger(__name__)

INDEX_FIELD = "source_index"
"""The field holding a record's position in the input (what resuming matches on)."""

SETTINGS_FIELD = "teacher_settings_id"
"""The field holding the hash of the result-changing settings a line was made with."""

REPLIES_FIELD = "server_replies"
"""The key of ``<output>.settings.json`` holding what a server teacher's replies said: ``model``, the model
name they report (their ``model`` field; once ``--force`` appended another model's replies, that of the
latest ones), and ``base_url``, the API root they came from (without credentials or query; for
information). It is no setting: neither hashed into the lines nor compared as one. The
model is checked by :class:`ReplyModelCheck`."""


class OutputInUseError(RuntimeError):
    """Another run is generating into the same output file (it holds the file's lock).

    Example:
        >>> # with exclusive_output("out.jsonl"): generate_rationales(..., "out.jsonl")  -> OutputInUseError
    """


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``<path>.lock`` exclusively while a run writes ``path``; a second run is refused, not interleaved.

    The lock is the operating system's (``fcntl.flock``): it ends with the process, so a crashed run leaves
    nothing to clean up. The lock file is removed when the run ends. Without ``fcntl`` (Windows) nothing is
    locked.

    Raises:
        OutputInUseError: another process holds the lock.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
        >>> with exclusive_output(path):
        ...     (path.parent / "out.jsonl.lock").exists()
        True
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock_file(lock_path, fcntl, path)
    try:
        yield
    finally:
        try:
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _lock_file(lock_path: Path, fcntl: Any, path: str | os.PathLike[str]) -> int:
    """Open and lock ``lock_path``; the open descriptor, once it is locked and still the file at that path.

    A run that ends removes its lock file: one that opened it just before then locks a removed file, which a
    newcomer would not see, so the lock is taken again on the file the path now names.
    """
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputInUseError(
                f"another run is generating into {path} (it holds {lock_path}); wait for it to finish, or write "
                "to another --output-file"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock_path):
            return fd
        os.close(fd)  # the run that held it ended and removed it meanwhile: lock the one there now


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


class JsonlAppender:
    """Append JSON objects to a file, one line per ``os.write``, never buffered in the process.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
        >>> with JsonlAppender(path) as out:
        ...     out.write({"x": 1})
        >>> path.read_text()
        '{"x": 1}\\n'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line (one system call for the whole line)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: the appender is closed")
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # a full disk writes part of the line, then fails
                written += os.write(self._fd, data[written:])
        except OSError as error:  # os.write's error names no file
            raise OSError(
                error.errno,
                f"could not write a record to {self.path}: {error.strerror}; the records written before are "
                "kept (a line cut short is redone): fix the cause (free some space) and rerun to continue",
            ) from error

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class DoneRecords:
    """What a file already holds.

    Attributes:
        records: source index -> the line's record.
        truncated: 1 when a cut-short last line was removed, else 0.

    Examples:
        >>> DoneRecords().records
        {}
    """

    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    truncated: int = 0


def read_done(path: str | os.PathLike[str]) -> DoneRecords:
    """Read a generator output (or rejects) file; a cut-short last line is removed from the file.

    Lines end at ``"\n"`` only (a record may hold U+2028 or U+0085, which ``json.dumps`` leaves as they
    are). The complete lines are checked before anything is cut: a file the generator did not write is
    refused unchanged. A last line that is a whole JSON value lacks only its newline (an editor dropped it):
    it is checked as the others and kept, and the newline is added.

    Raises:
        DataFormatError: a complete line is not UTF-8, not a JSON object with a non-negative integer
            ``source_index``, or an index appears twice (the message names file and line).

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "o.jsonl"
        >>> _ = path.write_text('{"source_index": 0}\\n{"source_ind')
        >>> done = read_done(path)
        >>> sorted(done.records), done.truncated, path.read_text()
        ([0], 1, '{"source_index": 0}\\n')
    """
    path = Path(path)
    done = DoneRecords()
    if not path.exists():
        return done
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    lines = split_lines(decode_text(data[:end], str(path)))
    tail = _whole_last_line(data[end:])
    if tail is not None:
        lines.append(tail)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        index = record.get(INDEX_FIELD) if isinstance(record, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise DataFormatError(
                f"{path}, line {number}: expected a JSON object with an integer {INDEX_FIELD!r} (0 or more) "
                "(is this a file hf-cotmi generate-rationales wrote?)"
            )
        if index in done.records:
            raise DataFormatError(f"{path}, line {number}: {INDEX_FIELD} {index} appears a second time")
        done.records[index] = record
    if tail is not None:
        logger.warning("%s: adding the newline its last line lacked", path)
        with open(path, "ab") as handle:
            handle.write(b"\n")
    elif end < len(data):
        logger.warning(
            "%s: removing a cut-short last line (%d bytes); it is generated again", path, len(data) - end
        )
        with open(path, "r+b") as handle:
            handle.truncate(end)
        done.truncated = 1
    return done


def _whole_last_line(tail: bytes) -> str | None:
    """``tail`` (the bytes after the last newline) as text when it is a whole JSON value, else None.

    A line cut short is never valid JSON (its closing brace comes last), so a tail that parses lacks only
    its newline.

    Examples:
        >>> _whole_last_line(b'{"source_index": 3}'), _whole_last_line(b'{"source_ind'), _whole_last_line(b"")
        ('{"source_index": 3}', None, None)
    """
    if not tail.strip():
        return None
    try:
        text = tail.decode("utf-8")
        json.loads(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError: a cut-short line
        return None
    return text


def sort_by_index(path: str | os.PathLike[str]) -> None:
    """Rewrite ``path`` with its lines in ``source_index`` order (temporary file, then an atomic rename).

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.jsonl"
        >>> _ = path.write_text('{"source_index": 2}\\n{"source_index": 1}\\n')
        >>> sort_by_index(path); path.read_text()
        '{"source_index": 1}\\n{"source_index": 2}\\n'
    """
    path = Path(path)
    if not path.exists():
        return
    lines = [line for line in split_lines(path.read_text(encoding="utf-8")) if line.strip()]
    ordered = sorted(lines, key=lambda line: json.loads(line)[INDEX_FIELD])
    if ordered == lines:
        return
    # a full disk leaves the file as it was, and no partial copy beside it
    write_text_atomically(path, "".join(line + "\n" for line in ordered))


def settings_id(settings: dict[str, Any]) -> str:
    """A short stable hash of the result-changing settings.

    Examples:
        >>> settings_id({"a": 1, "b": 2}) == settings_id({"b": 2, "a": 1})
        True
    """
    text = json.dumps(settings, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def settings_path(output_file: str | os.PathLike[str]) -> Path:
    """Where the settings of ``output_file`` are stored: ``<output_file>.settings.json``.

    Examples:
        >>> settings_path("out/train.jsonl").name
        'train.jsonl.settings.json'
    """
    path = Path(output_file)
    return path.with_name(path.name + ".settings.json")


class SettingsMismatchError(ValueError):
    """The output was made with other result-changing settings.

    Examples:
        >>> issubclass(SettingsMismatchError, ValueError)
        True
    """


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


def check_settings(
    output_file: str | os.PathLike[str],
    settings: dict[str, Any],
    existing: list[dict[str, Any]],
    *,
    force: bool,
) -> dict[str, Any] | None:
    """Refuse (unless ``force``) to append to an output made with other result-changing settings.

    Compares ``settings`` with the stored ``<output>.settings.json`` and with the settings hash of every
    existing line, then stores ``settings`` (first run, or forced), keeping what the server's replies said
    (:data:`REPLIES_FIELD`), which is no setting. With no existing line (a first run that failed before
    writing any, or an output deleted to start again) the stored settings describe nothing and are replaced,
    and what replies said is dropped.

    Returns:
        What the replies the existing lines were made from said (``{"model": ..., "base_url": ...}``), for
        :class:`ReplyModelCheck`; None when nothing is recorded (no existing line, a teacher that is no
        server, or a settings file written before replies were recorded).

    Raises:
        SettingsMismatchError: the settings differ and ``force`` is False; the message lists what differs.
        DataFormatError: the settings file is not a JSON object, or what it records of the replies is not
            an object with a text ``model``.

    Examples:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "o.jsonl"
        >>> check_settings(out, {"temperature": 0.0}, [], force=False)
        >>> try:
        ...     check_settings(out, {"temperature": 0.7}, [{"teacher_settings_id": "x"}], force=False)
        ... except SettingsMismatchError as error:
        ...     print("temperature: 0.0 -> 0.7" in str(error))
        True
    """
    stored_path = settings_path(output_file)
    current = settings_id(settings)
    stored, replies = _stored_settings(stored_path)
    if not existing:
        if stored is not None and stored != settings:
            logger.info("%s: no record written yet; replacing the settings of an earlier run", stored_path)
            stored = None
        replies = None  # they describe no record
    other_ids = {record.get(SETTINGS_FIELD) for record in existing} - {current}
    if (stored is not None and stored != settings) or other_ids:
        if not force:
            detail = _differences(stored, settings) if stored is not None else []
            if not detail:
                detail = [f"{len(other_ids)} other settings hash(es) in the existing lines"]
            raise _mismatch_error(output_file, detail)
        logger.warning("%s: appending with other settings (--force)", output_file)
    _store_settings(stored_path, settings, replies)
    return replies


def check_known_settings(
    output_file: str | os.PathLike[str],
    known: dict[str, Any],
    existing: list[dict[str, Any]],
    *,
    force: bool,
) -> None:
    """Refuse early what :func:`check_settings` would refuse later: before a teacher loads (minutes for a big
    local model), its settings are known only in part, and this compares those.

    Reads ``<output>.settings.json`` when there is one (refusing a malformed one as :func:`check_settings`
    does) and, when ``existing`` lines were made with it and ``force`` is False, compares its values of the
    keys of ``known`` with ``known``. Settings not in ``known`` (a local teacher's chat template, known once
    its tokenizer loads) are left to :func:`check_settings`, as is the settings hash of every line. Writes
    nothing.

    Raises:
        SettingsMismatchError: a known setting differs (the message lists what differs, as
            :func:`check_settings`'s does).
        DataFormatError: the settings file is not a JSON object, or what it records of the replies is not
            an object with a text ``model``.

    Examples:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "o.jsonl"
        >>> _ = check_settings(out, {"model": "m", "temperature": 0.0, "chat_template_sha256": "ab"}, [], force=False)
        >>> done = [{"source_index": 0}]
        >>> check_known_settings(out, {"model": "m", "temperature": 0.0}, done, force=False)
        >>> try:
        ...     check_known_settings(out, {"model": "m", "temperature": 0.7}, done, force=False)
        ... except SettingsMismatchError as error:
        ...     print("differing: temperature: 0.0 -> 0.7." in str(error))
        True
    """
    stored, _ = _stored_settings(settings_path(output_file))
    if stored is None or force or not existing:  # with no line written, check_settings replaces them
        return
    detail = _differences({key: stored.get(key) for key in known}, known)
    if detail:
        raise _mismatch_error(output_file, detail)


def _stored_settings(stored_path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The settings stored in ``stored_path`` and, apart, what it records of the server's replies (checked);
    ``(None, None)`` when there is no such file."""
    if not stored_path.exists():
        return None, None
    stored = _read_settings_file(stored_path)
    replies = stored.pop(REPLIES_FIELD, None)
    if replies is not None:
        _check_replies(replies, stored_path)
    return stored, replies


def _mismatch_error(output_file: str | os.PathLike[str], detail: list[str]) -> SettingsMismatchError:
    """The error refusing to append to ``output_file``, made with other settings (``detail``: what differs)."""
    return SettingsMismatchError(
        f"{output_file} was made with other settings that change the results; differing: "
        f"{', '.join(detail)}. Use another output file, delete it (and its rejects file), or pass "
        "--force to append anyway (records already there are kept as they are)"
    )


def _read_settings_file(path: Path) -> dict[str, Any]:
    """The JSON object stored in ``path``; a DataFormatError naming it when it is not one."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(stored, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object of settings, found {type(stored).__name__} "
            f"{stored!r}; delete it, and the next run checks its settings against the hash in every line"
        )
    return stored


def _check_replies(replies: Any, path: Path) -> None:
    """A DataFormatError naming ``path`` when what it records of the replies is not an object with a text
    ``model``."""
    if not isinstance(replies, dict) or not isinstance(replies.get("model"), str):
        raise DataFormatError(
            f"{path}: {REPLIES_FIELD!r} is {replies!r}; expected an object with the model name the server's "
            f'replies report, such as {{"model": "teacher"}}; remove the key, and the next reply is recorded'
        )


def _store_settings(path: Path, settings: dict[str, Any], replies: dict[str, Any] | None) -> None:
    """Write ``settings`` (with ``replies`` under :data:`REPLIES_FIELD`) to ``path``, unless it holds them."""
    text = json.dumps({**settings, **({REPLIES_FIELD: replies} if replies else {})}, indent=2, sort_keys=True)
    if path.exists() and path.read_text(encoding="utf-8") == text + "\n":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, text + "\n")


def _url_without_secrets(url: str) -> str:
    """``url`` without user name, password, query and fragment, the parts that may carry a key.

    Examples:
        >>> _url_without_secrets("https://user:key@api.example.com:8443/v1?api-key=k")
        'https://api.example.com:8443/v1'
        >>> _url_without_secrets("http://[::1]:8000/v1")
        'http://[::1]:8000/v1'
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a malformed URL (the client refused it already)
        return ""
    host = f"[{host}]" if ":" in host else host
    return urllib.parse.urlunsplit(
        (parts.scheme, host if port is None else f"{host}:{port}", parts.path, "", "")
    )


class ReplyModelCheck:
    """Compares the model name each reply of a server teacher reports with the one the output was made from,
    and records it beside the output (:data:`REPLIES_FIELD` of ``<output>.settings.json``) when there is none.

    The name asked for (``--model``) identifies no teacher: TGI answers to any name, and the same URL may
    serve another model after a restart. The name a reply reports is what the server says it ran, so two
    teachers' outputs are not mixed in one file unawares. A reply naming no model is not checked. A URL that
    changed is no refusal (a restarted server on another port): the new one is recorded.

    Called from the worker threads of a run (:attr:`OpenAICompatibleBackend.reply_model_check
    <hf_cotmi.teacher.backends.OpenAICompatibleBackend>`), before a reply's text is used.

    Args:
        output_file: the output, whose settings file records the replies.
        settings: the run's settings, as :func:`check_settings` stored them.
        recorded: what :func:`check_settings` returned (None: record the first reply's model).
        base_url: the API root the replies come from (recorded without credentials or query).
        force: append anyway when a reply names another model (``--force``): a warning, and the new model
            is recorded as that of the latest records (which model the earlier ones came from is not kept).

    Raises:
        SettingsMismatchError: (when called) a reply names another model than the one recorded, and
            ``force`` is False; the message names the output, both models and what to do.

    Examples:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "o.jsonl"
        >>> check = ReplyModelCheck(out, {"model": "tgi"}, None, base_url="http://127.0.0.1:8080/v1", force=False)
        >>> check("Qwen/Qwen2.5-7B-Instruct")  # the first reply: recorded
        >>> try:
        ...     check("meta-llama/Llama-3.1-8B-Instruct")
        ... except SettingsMismatchError as error:
        ...     print(str(error).split(", but")[0].split(": ", 1)[1])
        the server at http://127.0.0.1:8080/v1 replies as model 'meta-llama/Llama-3.1-8B-Instruct'
    """

    def __init__(
        self,
        output_file: str | os.PathLike[str],
        settings: dict[str, Any],
        recorded: dict[str, Any] | None,
        *,
        base_url: str,
        force: bool,
    ) -> None:
        self.output_file, self.settings, self.force = Path(output_file), dict(settings), force
        self.recorded = dict(recorded) if recorded else None
        self.base_url = _url_without_secrets(base_url)
        self._lock = threading.Lock()

    def __call__(self, model: str) -> None:
        """Check (and, the first time, record) the model name one reply reports."""
        with self._lock:
            recorded = self.recorded
            if recorded is not None and recorded.get("model") != model:
                self._refuse(model, recorded)
            new = {"model": model, "base_url": self.base_url}
            if recorded != new:
                _store_settings(settings_path(self.output_file), self.settings, new)
                self.recorded = new

    def _refuse(self, model: str, recorded: dict[str, Any]) -> None:
        """Raise the SettingsMismatchError for a reply naming ``model`` (or warn, with ``force``)."""
        came_from = f", from {recorded['base_url']}" if recorded.get("base_url") else ""
        said = (
            f"{self.output_file}: the server at {self.base_url} replies as model {model!r}, but the latest records "
            f"in {self.output_file} come from replies naming model {recorded['model']!r} (recorded in "
            f"{settings_path(self.output_file)}{came_from})"
        )
        if self.force:
            logger.warning("%s; appending anyway (--force), and recording %r", said, model)
            return
        asked = self.settings.get("model")
        raise SettingsMismatchError(
            f"{said}: two teachers' outputs would be mixed"
            + (f" (the name asked for, {asked!r}, does not tell servers apart)" if asked else "")
            + f". Point --base-url at the server that made them, write to another output file, delete "
            f"{self.output_file} (and its rejects file) to start over, or pass --force to append anyway (records "
            "already there are kept as they are)"
        )
