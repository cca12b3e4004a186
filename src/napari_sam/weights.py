"""Registry of known SAM checkpoints and hash-verified, atomic download into a user cache.

Downloads go through :func:`pooch.retrieve`, which streams into a temporary file inside the
cache directory, verifies the hash and only then renames the file to its final name, so a
failed or corrupt download never leaves a file at the target path. The transfer itself
(:class:`napari_sam._download.BoundedDownloader`) has a read timeout and an overall
deadline (``timeout``, ``$NAPARI_SAM_DOWNLOAD_TIMEOUT``) and checks the announced length.

Hashes use pooch's ``"alg:hexdigest"`` format.  The official SAM / MobileSAM checkpoints are
pinned by SHA256; micro-sam publishes ``xxh128`` hashes for its fine-tuned models (checked
with ``xxhash``, a dependency). A hash whose algorithm is unknown is an error: nothing is
ever used unverified when a hash is given.

A file already in the cache (e.g. placed there by hand on an offline machine) is never
deleted or downloaded over: if its hash differs, :func:`fetch_weights` refuses it with a
:class:`WeightsHashError` naming both hashes, unless the user opts in
(``allow_hash_mismatch=True`` or ``$NAPARI_SAM_ALLOW_HASH_MISMATCH=1``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import types
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import pooch

__all__ = [
    "ALLOW_HASH_MISMATCH_ENV_VAR",
    "CACHE_DIR_ENV_VAR",
    "DOWNLOAD_TIMEOUT_ENV_VAR",
    "MODEL_TYPES",
    "REGISTRY",
    "ModelInfo",
    "ModelType",
    "WeightsHashError",
    "WeightsUnavailableError",
    "available_models",
    "default_cache_dir",
    "fetch_verified",
    "fetch_weights",
    "get_model_info",
]

CACHE_DIR_ENV_VAR = "NAPARI_SAM_CACHE_DIR"
"""Environment variable that overrides the default weights cache directory."""

ALLOW_HASH_MISMATCH_ENV_VAR = "NAPARI_SAM_ALLOW_HASH_MISMATCH"
"""Set to ``1`` to use a cached checkpoint whose hash differs from the registry's (with a
warning) instead of refusing it."""

DOWNLOAD_TIMEOUT_ENV_VAR = "NAPARI_SAM_DOWNLOAD_TIMEOUT"
"""Overall time limit of one download, in seconds (default :data:`DEFAULT_TIMEOUT_S`)."""

DEFAULT_TIMEOUT_S = 4 * 3600.0  # vit_h (2.5 GB) at ~1.5 Mbit/s; never "forever"
READ_TIMEOUT_S = 60.0  # no byte for this long: the download fails

ModelType = Literal["vit_b", "vit_l", "vit_h", "vit_t", "custom"]
MODEL_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h", "vit_t")
"""Published encoder architectures a checkpoint can belong to. ``"custom"`` (the packaged
demo model) means: the architecture is the config stored in the checkpoint."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Description of one downloadable SAM checkpoint.

    Attributes:
        name: Registry key, e.g. ``"vit_b_lm"``.
        model_type: Encoder architecture (``"vit_b"``, ``"vit_l"``, ``"vit_h"`` or ``"vit_t"``).
        url: Download URL.
        known_hash: pooch-style hash (``"sha256:..."``, ``"xxh128:..."``) or ``None`` if unknown.
        size_bytes: Approximate download size in bytes, for UI hints only (never checked);
            for micro-sam models it is assumed equal to the base architecture. ``None`` if
            unknown.
        filename: File name inside the cache directory (unique across the registry).
        description: Human-readable one-line description.
        package_file: For weights shipped inside the package: the file name in
            ``napari_sam/data``; :func:`fetch_weights` returns it without network access.
    """

    name: str
    model_type: ModelType
    url: str
    known_hash: str | None
    size_bytes: int | None
    filename: str
    description: str
    package_file: str | None = None


class WeightsUnavailableError(RuntimeError):
    """The weights could not be downloaded (network failure, offline machine, ...)."""

    def __init__(self, message: str, *, url: str = "", target: Path | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.target = target


class WeightsHashError(WeightsUnavailableError):
    """A file does not match the expected hash (a download: nothing was kept; a file
    already in the cache: it was left untouched), or the hash cannot be checked."""

    def __init__(
        self, message: str, *, url: str = "", target: Path | None = None,
        expected: str | None = None, actual: str | None = None,
    ) -> None:
        super().__init__(message, url=url, target=target)
        self.expected = expected
        self.actual = actual


_MICRO_SAM = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io"
_MICRO_SAM_NOTE = "micro-sam fine-tuned model (torch_em checkpoint, weights under 'model_state')"

_ENTRIES = (
    # Official Segment Anything checkpoints (Meta). SHA256 as listed in micro-sam's registry.
    ModelInfo(
        "vit_b", "vit_b", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "sha256:ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383, "sam_vit_b_01ec64.pth", "Segment Anything ViT-B (Meta, original).",
    ),
    ModelInfo(
        "vit_l", "vit_l", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "sha256:3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1_249_524_607, "sam_vit_l_0b3195.pth", "Segment Anything ViT-L (Meta, original).",
    ),
    ModelInfo(
        "vit_h", "vit_h", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "sha256:a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879, "sam_vit_h_4b8939.pth", "Segment Anything ViT-H (Meta, original).",
    ),
    # MobileSAM (TinyViT encoder); same SHA256 as micro-sam's vit_t entry.
    ModelInfo(
        "vit_t", "vit_t", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        "sha256:6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        40_728_226, "mobile_sam.pt", "MobileSAM ViT-Tiny (distilled from SAM ViT-H).",
    ),
    # micro-sam generalist models (bioimage.io records); xxh128 from micro_sam/v1/util.py.
    ModelInfo(
        "vit_t_lm", "vit_t", f"{_MICRO_SAM}/faithful-chicken/1.1/files/vit_t.pt",
        "xxh128:72ec5074774761a6e5c05a08942f981e", 41_000_000, "micro_sam_vit_t_lm.pt",
        f"Light microscopy (cells, nuclei) ViT-T; {_MICRO_SAM_NOTE}.",
    ),
    ModelInfo(
        "vit_b_lm", "vit_b", f"{_MICRO_SAM}/diplomatic-bug/1.2/files/vit_b.pt",
        "xxh128:fe9252a29f3f4ea53c15a06de471e186", 375_000_000, "micro_sam_vit_b_lm.pt",
        f"Light microscopy (cells, nuclei) ViT-B; {_MICRO_SAM_NOTE}.",
    ),
    ModelInfo(
        "vit_l_lm", "vit_l", f"{_MICRO_SAM}/idealistic-rat/1.2/files/vit_l.pt",
        "xxh128:017f20677997d628426dec80a8018f9d", 1_250_000_000, "micro_sam_vit_l_lm.pt",
        f"Light microscopy (cells, nuclei) ViT-L; {_MICRO_SAM_NOTE}.",
    ),
    ModelInfo(
        "vit_t_em_organelles", "vit_t", f"{_MICRO_SAM}/greedy-whale/1/files/vit_t.pt",
        "xxh128:253474720c497cce605e57c9b1d18fd9", 41_000_000, "micro_sam_vit_t_em_organelles.pt",
        f"Electron microscopy organelles (mitochondria, nuclei) ViT-T; {_MICRO_SAM_NOTE}.",
    ),
    ModelInfo(
        "vit_b_em_organelles", "vit_b", f"{_MICRO_SAM}/noisy-ox/1.2/files/vit_b.pt",
        "xxh128:f3bf2ed83d691456bae2c3f9a05fb438", 375_000_000, "micro_sam_vit_b_em_organelles.pt",
        f"Electron microscopy organelles (mitochondria, nuclei) ViT-B; {_MICRO_SAM_NOTE}.",
    ),
    ModelInfo(
        "vit_l_em_organelles", "vit_l", f"{_MICRO_SAM}/humorous-crab/1.2/files/vit_l.pt",
        "xxh128:810b084b6e51acdbf760a993d8619f2d", 1_250_000_000,
        "micro_sam_vit_l_em_organelles.pt",
        f"Electron microscopy organelles (mitochondria, nuclei) ViT-L; {_MICRO_SAM_NOTE}.",
    ),
)

_PACKAGED = (
    # Trained here on synthetic nuclei (docs/demo_model.md); shipped in napari_sam/data.
    ModelInfo(
        "demo", "custom", "", None, None, "demo_sam.pt",
        "DEMO model (small SAM architecture trained on synthetic nuclei; not SAM). "
        "Offline demos and tests.",
        package_file="demo_sam.pt",
    ),
)

REGISTRY: Mapping[str, ModelInfo] = types.MappingProxyType(
    {m.name: m for m in _ENTRIES + _PACKAGED}
)
"""Read-only mapping ``name -> ModelInfo`` of all known checkpoints."""


def available_models() -> list[str]:
    """Return the names of all registered checkpoints, in registry order."""
    return list(REGISTRY)


def get_model_info(name: str) -> ModelInfo:
    """Return the :class:`ModelInfo` registered under ``name``.

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown SAM model {name!r}; valid names are: {', '.join(available_models())}."
        ) from None


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch's own "Downloading data from …" info line off while it downloads for us:
    its logging handler holds the stderr of the moment pooch was imported (under a test
    runner or an embedding GUI: a closed stream), and our progress bar and one-line
    errors already say what happens."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory where weights are cached (it is not created here).

    Precedence: the explicit ``cache_dir`` argument, then the ``NAPARI_SAM_CACHE_DIR``
    environment variable (if non-empty), then ``pooch.os_cache("napari-sam")``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_DIR_ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(pooch.os_cache("napari-sam"))


def _algorithm(known_hash: str) -> str:
    return known_hash.split(":", 1)[0].lower() if ":" in known_hash else "sha256"


def _checked_hash(info: ModelInfo) -> str | None:
    """``info.known_hash`` if pooch can check it; an unknown algorithm is an error."""
    if info.known_hash is None:
        return None
    from pooch.hashes import ALGORITHMS_AVAILABLE

    algorithm = _algorithm(info.known_hash)
    if algorithm not in ALGORITHMS_AVAILABLE:
        raise WeightsHashError(
            f"The hash {info.known_hash!r} given for {info.name!r} uses the unknown algorithm "
            f"{algorithm!r}, so the file cannot be verified; use sha256 or xxh128.",
            url=info.url, expected=info.known_hash,
        )
    return info.known_hash


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    text = os.environ.get(DOWNLOAD_TIMEOUT_ENV_VAR, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{DOWNLOAD_TIMEOUT_ENV_VAR}={text!r} is not a number of seconds"
        ) from None


def _unavailable_message(info: ModelInfo, target: Path, reason: object) -> str:
    return (
        f"Could not download the SAM weights {info.name!r} from {info.url} ({reason}); "
        f"on an offline machine, download that URL elsewhere and save it as {target} "
        f"(file name {info.filename!r}), or set the {CACHE_DIR_ENV_VAR} environment "
        f"variable to a directory that already contains {info.filename!r}."
    )


def _packaged_path(info: ModelInfo) -> Path:
    """Path of weights shipped inside the package (never touches the network)."""
    from importlib.resources import files

    path = Path(str(files("napari_sam").joinpath("data", str(info.package_file))))
    if not path.is_file():
        raise WeightsUnavailableError(
            f"The packaged weights {info.name!r} are missing from this installation "
            f"(expected {path}); reinstall napari-sam.",
            target=path,
        )
    return path


def fetch_verified(
    name_or_info: str | ModelInfo,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    *,
    allow_hash_mismatch: bool = False,
    timeout: float | None = None,
) -> tuple[Path, str | None]:
    """The local path of a checkpoint, downloaded into the cache if needed, and the
    file's hash when it was computed or verified on the way (``"alg:hexdigest"``: the
    registry's hash of a verified file, the actual hash of a mismatching one that was
    allowed), else None (no known hash, packaged weights) — so a loader need not hash
    the file again.

    A cached file whose hash matches (or any cached file when no hash is known) is returned
    without network access.  A cached file whose hash differs is never deleted and never
    downloaded over (it may have been placed there by hand): it is refused with a
    :class:`WeightsHashError` naming the path and both hashes, unless
    ``allow_hash_mismatch`` (or ``$NAPARI_SAM_ALLOW_HASH_MISMATCH=1``) says to use it anyway,
    with a warning.  Downloads are atomic and verified: the target path only ever holds a
    complete file with the expected hash (without a known hash: with the length the
    server announced).

    Args:
        name_or_info: A registry name (see :func:`available_models`) or a :class:`ModelInfo`,
            e.g. ``dataclasses.replace(get_model_info("vit_b"), url=...)`` for a mirror.
        cache_dir: Cache directory; see :func:`default_cache_dir` for the default.
        progress: Show a tqdm progress bar while downloading.
        allow_hash_mismatch: Use a cached file whose hash differs (with a warning).
        timeout: Overall time limit of the download in seconds (default
            ``$NAPARI_SAM_DOWNLOAD_TIMEOUT`` or 4 hours); a read that waits 60 s (or
            ``timeout``, if shorter) for data also fails.

    Raises:
        ValueError: Unknown model name; a timeout that is not a positive number.
        WeightsHashError: The cached or downloaded file does not match ``known_hash``, or
            ``known_hash`` uses an unknown algorithm.
        WeightsUnavailableError: Any other download failure (network, HTTP error, cut
            connection, timeout, I/O).
    """
    from ._download import BoundedDownloader, DownloadError

    info = name_or_info if isinstance(name_or_info, ModelInfo) else get_model_info(name_or_info)
    if info.package_file is not None:
        return _packaged_path(info), None
    directory = default_cache_dir(cache_dir)
    target = directory / info.filename
    known_hash = _checked_hash(info)

    if target.is_file():
        if known_hash is None:
            return target, None
        actual = pooch.file_hash(str(target), alg=_algorithm(known_hash))
        if actual.lower() == known_hash.split(":")[-1].lower():
            return target, _normalised(known_hash)
        actual = f"{_algorithm(known_hash)}:{actual}"
        if allow_hash_mismatch or _env_flag(ALLOW_HASH_MISMATCH_ENV_VAR):
            warnings.warn(
                f"Using {target} although its hash {actual} differs from the expected "
                f"{known_hash} for {info.name!r} (hash mismatch explicitly allowed).",
                stacklevel=2,
            )
            return target, actual.lower()
        raise WeightsHashError(
            f"The file {target} (for {info.name!r}) has hash {actual} but {known_hash} was "
            f"expected; it was left untouched. If it is the wrong or a damaged file, delete "
            f"it to download {info.url} again; to use it anyway, set "
            f"{ALLOW_HASH_MISMATCH_ENV_VAR}=1 (allow_hash_mismatch=True in Python).",
            url=info.url, target=target, expected=known_hash, actual=actual,
        )

    downloader = BoundedDownloader(
        _timeout(timeout), READ_TIMEOUT_S, verified=known_hash is not None, progress=progress
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _quiet_pooch():
            path = pooch.retrieve(
                url=info.url, known_hash=known_hash, fname=info.filename, path=directory,
                progressbar=progress, downloader=downloader,
            )
    except ValueError as exc:  # pooch's hash mismatch (temp file already deleted)
        if known_hash is None or "hash" not in str(exc).lower():
            raise
        match = re.search(r"but got ([0-9a-fA-F]+)", str(exc))
        actual = f"{_algorithm(known_hash)}:{match.group(1)}" if match else "unknown"
        raise WeightsHashError(
            f"The file downloaded from {info.url} for {info.name!r} has hash {actual} but "
            f"{known_hash} was expected; it was deleted and nothing was written to {target}.",
            url=info.url, target=target, expected=known_hash, actual=actual,
        ) from exc
    except (DownloadError, OSError) as exc:  # requests.RequestException is an OSError too
        reason = str(exc) if isinstance(exc, DownloadError) else f"{type(exc).__name__}: {exc}"
        raise WeightsUnavailableError(
            _unavailable_message(info, target, reason), url=info.url, target=target,
        ) from exc
    return Path(path), None if known_hash is None else _normalised(known_hash)


def _normalised(known_hash: str) -> str:
    """``"alg:hexdigest"`` in lower case (a bare digest is SHA-256)."""
    return f"{_algorithm(known_hash)}:{known_hash.split(':')[-1].lower()}"


def fetch_weights(
    name_or_info: str | ModelInfo,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> Path:
    """Return the local path of a checkpoint, downloading it into the cache if needed:
    :func:`fetch_verified` without the hash (same arguments — ``allow_hash_mismatch``,
    ``timeout`` — and errors)."""
    return fetch_verified(name_or_info, cache_dir, progress, **kwargs)[0]
