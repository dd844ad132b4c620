"""Download one file over HTTP(S) into a cache, verified by sha256, written atomically.

Only the standard library is used (``urllib``), so downloading needs no extra package. Nothing
here runs at import time; tests replace ``urllib.request.urlopen`` and never touch the network.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO

from vaelab.data.arrays import one_line
from vaelab.errors import VaelabError

_CHUNK = 1 << 20


def download(url: str, dest: Path, sha256: str, *, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless the hash check fails; return ``dest``.

    ``sha256`` is the hex digest of the file's content, or, when ``dest`` ends in ``.gz``, of
    the decompressed content: a mirror that re-compresses the same data (Debian does) still
    verifies. The bytes go to a temporary file in ``dest``'s folder that is renamed over
    ``dest`` only once verified, so an interrupted or corrupt download never leaves a file
    that a later run would trust.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        raise VaelabError(f"{dest.parent}: cannot write to cache ({one_line(err)})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, timeout, dest)
        digest = _sha256(tmp, gunzip=dest.name.endswith(".gz"))
        if digest != sha256.lower():
            found = f"sha256 {digest}" if digest else "a broken gzip stream"
            raise VaelabError(
                f"{url}: downloaded data has {found}, expected sha256 {sha256}; the download"
                " was deleted (corrupt transfer or changed upstream file), try again"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _fetch(url: str, out: BinaryIO, timeout: float, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
    except urllib.error.HTTPError as err:
        raise VaelabError(
            f"{url}: download failed (HTTP {err.code} {one_line(err.reason)})"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise VaelabError(
            f"{url}: download failed ({one_line(reason)}); are you offline? Then copy"
            f" the file to {dest} by hand"
        ) from None


def _sha256(path: Path, *, gunzip: bool) -> str | None:
    """Hex sha256 of the file, or of its gzip-decompressed content; None if unreadable."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as raw, gzip.open(raw) if gunzip else raw as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()
