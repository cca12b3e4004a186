"""``napari-sam models``: list the known models, or download one into the cache."""

from __future__ import annotations

import argparse

HELP = (
    "list known models (registry), download one with --download NAME, or show with --info "
    "which engine paths this machine takes"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--download", metavar="NAME", help="download NAME into the cache")
    p.add_argument("--cache-dir", help="cache directory (default: $NAPARI_SAM_CACHE_DIR)")
    p.add_argument(
        "--info",
        action="store_true",
        help="print this machine's CPU class, the decode plan per precision and the "
        "measured embedding time per slice",
    )
    p.add_argument("--device", default="auto", help="device for --info (default: auto)")


def run(args: argparse.Namespace) -> int:
    from .. import weights
    from .common import user_errors

    if args.info:
        with user_errors(ValueError):  # unknown device / CPU class override
            return _info(args.device)
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


def _info(device: str) -> int:
    """The CPU class, the plan of each precision on ``device`` and the measured times."""
    import warnings

    import torch

    from ..engine.cpu import cpu_info
    from ..engine.device import resolve_device
    from ..engine.expected import expected_embedding, vit_t_suggestion
    from ..engine.plan import resolve_plan

    dev = resolve_device(device)
    cpu = cpu_info()
    print(f"CPU:     {cpu.describe()}; native bf16: {'yes' if cpu.native_bf16 else 'no'}")
    print(f"torch:   {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"device:  {dev}")
    for precision in ("auto", "fp32", "bf16"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan = resolve_plan(dev, precision)
        note = "  (emulated here: slow)" if caught else ""
        print(f"\nprecision {precision}:{note}\n{plan.describe()}")
    if dev.type == "cpu":
        print(f"\nembedding one 1024² slice, precision auto, on a {cpu.cpu_class} CPU:")
        for model_type in ("vit_b", "vit_t"):
            m = expected_embedding(model_type, cpu.cpu_class)
            print(f"  {model_type:24s}{m.describe() + ' — ' + m.where if m else 'not measured'}")
        hint = vit_t_suggestion("vit_b", dev.type, cpu)
        if hint:
            print(f"\n{hint}")
    return 0
