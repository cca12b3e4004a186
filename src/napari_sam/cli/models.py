"""``napari-sam models``: list the known models, or download one into the cache."""

from __future__ import annotations

import argparse

HELP = "list known models (registry) or download one with --download NAME"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--download", metavar="NAME", help="download NAME into the cache")
    p.add_argument("--cache-dir", help="cache directory (default: $NAPARI_SAM_CACHE_DIR)")


def run(args: argparse.Namespace) -> int:
    from .. import weights
    from .common import user_errors

    if args.download:
        with user_errors(ValueError):  # unknown name (WeightsUnavailableError: top level)
            info = weights.get_model_info(args.download)
        path = weights.fetch_weights(info, cache_dir=args.cache_dir)
        print(path)
        return 0
    cache = weights.default_cache_dir(args.cache_dir)
    for name in weights.available_models():
        info = weights.get_model_info(name)
        here = "cached" if (cache / info.filename).is_file() else ""
        print(f"{name:22s} {info.model_type:6s} {here:7s} {info.description}")
    return 0
