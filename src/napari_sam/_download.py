"""One HTTP download with a read timeout, an overall deadline and a length check.

A ``pooch.retrieve`` downloader (``downloader(url, output_file, pooch)``): pooch writes
into a temporary file next to the target, checks the hash and renames it; this class
makes sure that what it hands over is the whole body the server announced, within the
time allowed. A short body (Content-Length not reached, a chunked body cut off), a
server that sends nothing for ``read_timeout`` seconds or a transfer that is not done by
the deadline raises :class:`DownloadError`, so pooch deletes the temporary file and
nothing appears at the target. A body with neither a declared length nor chunked
framing ends when the connection closes, which a dropped connection does too: it is
refused unless the caller verifies the bytes by hash (``verified=True``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

CHUNK = 1 << 20


class DownloadError(OSError):
    """The download failed or was cut short; the message says how."""


class BoundedDownloader:
    """Download ``url`` into ``output_file`` within ``deadline_s`` seconds overall, each
    read waiting at most ``read_timeout_s`` seconds for data.

    verified: the caller checks the file against a known hash afterwards, so a body
    whose completeness the server does not state (no Content-Length, not chunked) is
    acceptable; without a hash such a body is refused.
    """

    def __init__(
        self,
        deadline_s: float,
        read_timeout_s: float = 60.0,
        *,
        verified: bool,
        progress: bool = False,
    ) -> None:
        if not deadline_s > 0:
            raise ValueError(f"the download timeout must be > 0 seconds, got {deadline_s}")
        self.deadline_s = float(deadline_s)
        self.read_timeout_s = min(float(read_timeout_s), self.deadline_s)
        self.verified = verified
        self.progress = progress

    def __call__(self, url: str, output_file: Any, pooch: Any = None) -> None:
        import requests
        import urllib3

        start = time.monotonic()
        try:
            with requests.get(
                url, stream=True, timeout=(self.read_timeout_s, self.read_timeout_s)
            ) as response:
                response.raise_for_status()
                self._copy(response, output_file, start)
        except requests.RequestException as err:
            raise DownloadError(f"{type(err).__name__}: {err}") from err
        except urllib3.exceptions.HTTPError as err:  # raw reads: timeouts, cut bodies
            raise DownloadError(_reason(err)) from err

    def _copy(self, response: Any, output_file: Any, start: float) -> None:
        from tqdm import tqdm

        headers = response.headers
        length = headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        if expected is None and not chunked and not self.verified:
            raise DownloadError(
                "the server states neither the file's length nor uses chunked transfer and "
                "no hash is known, so a cut connection could not be told from a complete "
                "file; give the model a known hash (ModelInfo.known_hash)"
            )
        raw = response.raw
        got = 0
        close = isinstance(output_file, str)
        out = open(output_file, "wb") if close else output_file
        try:
            with tqdm(
                total=expected, unit="B", unit_scale=True, file=sys.stderr,
                disable=not self.progress, leave=True,
            ) as bar:
                while True:
                    elapsed = time.monotonic() - start
                    if elapsed > self.deadline_s:
                        raise DownloadError(
                            f"the download took longer than {self.deadline_s:g} s "
                            f"({got} bytes received); set a longer timeout"
                        )
                    block = raw.read1(CHUNK, decode_content=True)
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    bar.update(len(block))
        finally:
            if close:
                out.close()
        received = raw.tell()  # bytes on the wire (before any content decoding)
        if expected is not None and received != expected:
            raise DownloadError(
                f"the connection closed after {received} of {expected} bytes"
            )


def _reason(err: Exception) -> str:
    text = str(err)
    if "timed out" in text.lower():
        return f"no data for too long (read timed out): {text}"
    return f"the transfer was cut off: {text}"
