"""Where studies live: one Optuna journal file (default) or a database URL, and how to name it
without its password.

- Default: `$ABLATE_HOME/studies.journal`, file-locked, safe for several local worker processes.
- `postgresql://user:pass@host/db` (the `postgres` extra installs psycopg 3, SQLAlchemy's default
  PostgreSQL driver) runs one study from many machines; heartbeats detect dead workers.
A storage URL is shown only through `mask_url` (password, and secret-looking query values such as
`?password=`, as ***); error messages from drivers are scrubbed of the password too.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path
from urllib.parse import quote, unquote

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage

from ablate.data.cache import ablate_home
from ablate.errors import UserError, first_line

# a query parameter whose name looks secret (password=, sslpassword=, token=, ...): (name=)(value)
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:pass|pwd|secret|token)[^=&#]*=)([^&#]*)", re.IGNORECASE)
_SCHEMA_TRIES = 5  # PostgreSQL's CREATE TABLE races between processes on a fresh database: try again


def default_storage_url() -> str:
    return str(ablate_home() / "studies.journal")


def _split(url: str) -> tuple[str, str, str | None, str]:
    """(scheme, user, password or None, the rest after the credentials). The credentials end at the
    LAST '@': a password may hold '/', '?', '#' or ':' unescaped, and drivers accept that."""
    scheme, rest = url.split("://", 1)
    if "@" not in rest:
        return scheme, "", None, rest
    cred, tail = rest.rsplit("@", 1)
    user, sep, password = cred.partition(":")
    return scheme, user, password if sep else None, tail


def _secrets(url: str) -> list[str]:
    """The password and secret query values in a URL, raw and decoded (to scrub them from text)."""
    if "://" not in url:
        return []
    found = [_split(url)[2] or ""] + [m.group(2) for m in _SECRET_QUERY.finditer(url)]
    raw = [s for s in found if s]
    return sorted({*raw, *(quote(s, safe="") for s in raw), *(unquote(s) for s in raw)}, key=len, reverse=True)


def mask_url(url: str) -> str:
    """The storage URL with its password and secret query values (?password=...) replaced by ***."""
    if "://" not in url:
        return url
    scheme, user, password, tail = _split(url)
    cred = f"{user}:***@" if password is not None else f"{user}@" if user else ""
    return _SECRET_QUERY.sub(lambda m: m.group(1) + "***", f"{scheme}://{cred}{tail}")


def scrub(text: str, url: str | None) -> str:
    """`text` with every secret of `url` replaced by *** (driver messages may quote the URL)."""
    for s in _secrets(url or ""):
        text = text.replace(s, "***")
    return text


def open_storage(url: str | None, create: bool = True) -> BaseStorage:
    """An Optuna storage from a URL (postgresql://, mysql://, sqlite:///) or a journal file path.
    With create=False (commands that only read) a journal file that does not exist is refused,
    not created."""
    url = url or default_storage_url()
    if "://" in url:
        return _open_rdb(url)
    path = Path(url)
    if not create and not path.exists():
        raise UserError(f"storage {path}: no such journal file (no study has run there yet: `ablate run SPACE`)")
    return _open_journal(path)


def _open_rdb(url: str) -> BaseStorage:
    from ablate.study.queue import GRACE_S, HEARTBEAT_S, heartbeat_failed

    where = f"storage {mask_url(url)}"
    for attempt in range(_SCHEMA_TRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                  heartbeat_stale_trial_callback=heartbeat_failed, engine_kwargs={"pool_pre_ping": True})
        except ModuleNotFoundError as e:
            extra = " (pip install -c constraints.txt -e '.[postgres]')" if url.startswith("postgres") else ""
            raise UserError(f"{where}: its database driver is not installed: no module named {e.name!r}{extra}") from None
        except Exception as e:  # connection refused, unknown driver, bad URL, wrong password: the user's to fix
            text = first_line(e)
            if attempt + 1 < _SCHEMA_TRIES and any(s in text for s in ("already exists", "duplicate key")):
                time.sleep(0.5 * (attempt + 1))  # machines creating Optuna's tables at once: theirs won
                continue
            raise UserError(f"{where}: cannot open ({scrub(text, url)})") from None
    raise AssertionError("unreachable")


def _open_journal(path: Path) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    if path.is_dir():
        raise UserError(f"storage {path}: is a directory; expected a journal file (e.g. {path / 'studies.journal'}) "
                        "or a database URL")
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_journal(path)
    return JournalStorage(JournalFileBackend(str(path)))


def _check_journal(path: Path) -> None:
    """Every complete line of a journal file must be an Optuna log record. (Optuna skips a bad last
    line, as a write in progress, and would then append after it: the file would be lost for good.)"""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                break  # a record being written by another process
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or "op_code" not in record:
                raise UserError(f"storage {path}: line {number} is not an Optuna journal record: not a journal, or "
                                "a damaged one; use another --storage, or move this file away")


def storage_label(url: str | None) -> str:
    """How a storage is named in messages, reports and study attributes: never with a password."""
    return mask_url(url or default_storage_url())
