"""The MLflow store of an experiment, and the lock that keeps a sqlite store sound.

The store is ``sqlite:///<root>/mlflow/mlflow.db`` (artifacts under
``<root>/mlflow/artifacts``) unless ``MLFLOW_TRACKING_URI`` is set (a server started by
``make mlflow``, or another database). Used by track (runs, models) and release (the
model registry).
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from tasks.core.errors import ConfigError
from tasks.core.locks import file_lock

# Long enough for another experiment's track step to finish with the same store.
STORE_LOCK_WAIT_SECONDS = 600.0
# A tracking server that has not answered by then is not there: MLflow's own client would
# retry for about four minutes before it gives up.
ANSWER_WAIT_SECONDS = 5.0


# The store's vocabulary, shared by the track step (which writes runs) and whoever
# finds them again (``edgeflow compare latest``, the nightly gate).
EXPERIMENT = "edgeflow"
EXPERIMENT_TAG = "edgeflow.experiment"  # the experiment folder a lifecycle run belongs to
KIND_RUN_TAG = "edgeflow.kind"
LIFECYCLE = "lifecycle"  # edgeflow.kind of a parent run


def quoted(value: str) -> str | None:
    """``value`` as a string literal of MLflow's search filters (``name = <literal>``);
    None when that syntax cannot hold it. MLflow keeps what is between the quotes as it
    is (no escapes: ``''`` and ``\\'`` stay two characters), so a value with ``'`` is
    written in double quotes and one with ``"`` in single quotes; a value with both, or
    with a backslash before the closing quote, has no literal: compare it in Python."""
    for quote in ("'", '"'):
        if quote not in value and not value.endswith("\\"):
            return f"{quote}{value}{quote}"
    return None


# A query parameter whose name says it holds a secret (a database password, a token, a
# signed URL's signature or credential): never recorded nor hashed into a key.
SECRET_QUERY_NAME = re.compile(r"pass|secret|token|key|sig|credential|auth", re.IGNORECASE)


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"


def without_credentials(uri: str) -> str:
    """``uri`` without ``user:password@`` and without any query parameter whose name says
    it is a secret (:data:`SECRET_QUERY_NAME`): what may be written into a committed
    file. A sqlite URI has neither and is kept as it is."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    if uri.startswith("sqlite:"):
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]  # user:password@host:port -> host:port
    query = urlencode([(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True)
                       if not SECRET_QUERY_NAME.search(name)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def public_uri(uri: str, root: Path) -> str:
    """``uri`` :func:`without_credentials`, and a sqlite store inside the experiment
    folder ``root`` relative to it (``sqlite:///mlflow/mlflow.db``): the same destination
    gives the same text wherever the experiment lies and whoever reaches it (track's
    cache key, ``release.json``)."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        inside = root.resolve()
        if database.is_absolute() and database.resolve().is_relative_to(inside):
            return f"sqlite:///{database.resolve().relative_to(inside).as_posix()}"
    return without_credentials(uri)


def store_uri(recorded: str, root: Path) -> str:
    """The URI to reach the store a record names (``recorded``: a :func:`public_uri`, or
    an older record's full URI) from the experiment ``root``: a relative sqlite store is
    the experiment's; the store ``MLFLOW_TRACKING_URI`` names now, recorded without its
    credentials, is reached with them; any other URI as it is."""
    if recorded.startswith("sqlite:///") and not recorded.startswith("sqlite:////"):
        return f"sqlite:///{(root / recorded.removeprefix('sqlite:///')).resolve()}"
    current = tracking_uri(root)
    return current if recorded == public_uri(current, root) else recorded


def check_answers(uri: str, timeout: float = ANSWER_WAIT_SECONDS) -> None:
    """Refuse (ConfigError naming ``uri``) a tracking server that does not answer within
    ``timeout``: nothing listening, a dropped connection, or a process that accepts and
    never replies. Any HTTP answer (even an error status) or TLS handshake counts: the
    server is there. A database or file store is not checked."""
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return
    # urllib would read ``user:password@host`` as the host name; /health needs no login
    # (and an answer asking for one counts), and the error must not print the password.
    shown = without_credentials(uri)
    try:
        urllib.request.urlopen(f"{shown.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as error:  # URLError, a timeout, a refused connection
        reason = getattr(error, "reason", error)
        if isinstance(reason, ssl.SSLError):
            return
        raise ConfigError(f"MLFLOW_TRACKING_URI {shown}: no MLflow server answers there "
                          f"({str(reason) or type(reason).__name__}): start it (make mlflow), or "
                          "unset MLFLOW_TRACKING_URI to track into the experiment's mlflow/ "
                          "folder") from None


def store_lock(uri: str) -> AbstractContextManager[None]:
    """Exclusive use of a sqlite store while this process creates, migrates and writes
    it. MLflow runs its schema migrations on first use, and two processes migrating one
    file at once leave it half-migrated for good (``table _alembic_tmp_tags already
    exists`` on every later run). Runs of one experiment are already serialised; this
    covers experiments that share one store through ``MLFLOW_TRACKING_URI``. A server
    store migrates itself: nothing to lock."""
    if not uri.startswith("sqlite:///"):
        return nullcontext()
    database = Path(uri.removeprefix("sqlite:///"))
    return file_lock(database.with_name(f"{database.name}.lock"), STORE_LOCK_WAIT_SECONDS)
