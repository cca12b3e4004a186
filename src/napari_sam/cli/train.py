"""``napari-sam train``: train or fine-tune a SAM-architecture model on images + labels."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HELP = "train or fine-tune a SAM model on images + instance labels (or synthetic nuclei)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (one of)")
    src.add_argument("--images", help="folder of images (.tif/.npy/.png; 3D stacks → z-slices)")
    src.add_argument("--labels", help="folder of instance-label files named like the images")
    src.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="N synthetic nuclei images (napari_sam.synthetic)",
    )
    p.add_argument("--data-seed", type=int, default=1, help="seed of the synthetic images")
    init = p.add_mutually_exclusive_group()
    init.add_argument(
        "--arch",
        default="demo",
        help="architecture trained from scratch: demo (default), vit_b, vit_l, vit_h, vit_t",
    )
    init.add_argument(
        "--init", metavar="MODEL", help="fine-tune: registry name (vit_b, demo, ...) or checkpoint"
    )
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--resume", action="store_true", help="continue from --out and its state")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out (without --resume)"
    )
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--time-limit", type=float, metavar="MIN", help="stop after MIN minutes")
    p.add_argument("--batch-images", type=int, default=4, help="images encoded per step")
    p.add_argument("--objects", type=int, default=16, help="prompted objects per image")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200, help="warm-up steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=float, default=5.0, metavar="MIN")
    p.add_argument(
        "--kinds",
        type=float,
        nargs=3,
        default=(0.4, 0.3, 0.3),
        metavar=("POINT", "BOX", "MULTI"),
        help="shares of single-point / box / multi-point prompts (default 0.4 0.3 0.3)",
    )
    p.add_argument(
        "--box-jitter",
        type=float,
        nargs=2,
        default=(0.1, 0.1),
        metavar=("LO", "HI"),
        help="box sides move by N(0, s × side), s uniform in [LO, HI] (default 0.1 0.1)",
    )
    p.add_argument(
        "--centre-clicks",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of correction clicks at the centre of the largest error region "
        "(else uniform in the errors; default 0)",
    )
    p.add_argument("--freeze-encoder", action="store_true", help="train prompt encoder + decoder")
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the image encoder")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log", help="also append JSON lines of metrics to this file")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine.device import resolve_device
    from ..engine.loader import load_model
    from ..model.build import CONFIGS, DEMO_CONFIG, build_sam
    from ..model.checkpoint import load_sam_checkpoint
    from ..training.data import load_pairs, random_synthetic_pairs
    from ..training.loop import TrainConfig, train
    from . import UserError
    from .common import user_errors
    from .io import check_output
    from .progress import drive

    if not args.synthetic and not (args.images and args.labels):
        raise UserError("give --images and --labels, or --synthetic N")
    out = Path(args.out)
    if args.resume and not out.is_file():
        raise UserError(f"--resume: {out} does not exist; start without --resume")
    if not args.resume:  # the loop replaces the checkpoint atomically as it trains
        check_output(out, args.overwrite, ())
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.synthetic:
        pairs = random_synthetic_pairs(args.synthetic, seed=args.data_seed)
        data = f"synthetic n={args.synthetic} seed={args.data_seed}"
    elif args.images and args.labels:
        with user_errors(ValueError, OSError):  # no images, unmatched / non-integer labels
            pairs = load_pairs(args.images, args.labels)
        data = f"{args.images} + {args.labels} ({len(pairs)} slices)"
    else:
        raise UserError("give --images and --labels, or --synthetic N")
    with user_errors(ValueError):
        device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.resume:
        sam, config = load_sam_checkpoint(out)
    elif args.init:
        with user_errors(ValueError):  # unknown name, bad checkpoint (CheckpointError)
            loaded = load_model(args.init, device="cpu", precision="fp32")
        sam, config = loaded.sam, loaded.config
    else:
        archs = {"demo": DEMO_CONFIG, **CONFIGS}
        if args.arch not in archs:
            raise UserError(f"unknown --arch {args.arch!r}; known: {', '.join(archs)}")
        config = archs[args.arch]
        sam = build_sam(config)
    cfg = TrainConfig(
        steps=args.steps,
        time_limit_s=args.time_limit * 60 if args.time_limit else None,
        batch_images=args.batch_images,
        objects_per_image=args.objects,
        lr=args.lr,
        warmup_steps=args.warmup,
        seed=args.seed,
        checkpoint_every_s=args.checkpoint_every * 60,
        precision="bf16" if args.bf16 else "fp32",
        freeze_encoder=args.freeze_encoder,
        kind_fractions=tuple(args.kinds),
        box_jitter=tuple(args.box_jitter),
        centre_click_fraction=args.centre_clicks,
    )
    meta = {
        "trained_with": "napari-sam train "
        + " ".join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:]),
        "data": data,
        "init": args.init or f"scratch:{args.arch}",
        "train_config": json.dumps(dataclasses.asdict(cfg)),
    }
    with user_errors(OSError, prefix=f"cannot open --log {args.log}: "):
        log = open(args.log, "a") if args.log else None
    t0 = time.perf_counter()

    def show(p, bar) -> None:
        step, _total, m = p
        bar.set_postfix(loss=f"{m['loss']:.3f}", iou=f"{m.get('iou_r0', 0):.3f}")
        if log is not None:
            m = {"step": step, "t": round(time.perf_counter() - t0, 1), **m}
            log.write(json.dumps(m) + "\n")
            log.flush()

    try:
        with _write_errors(out):
            steps = train(sam.to(device), config, pairs, out, cfg, args.resume, meta)
            drive(steps, "train", "step", on_step=show, total=cfg.steps, dynamic_ncols=True)
    finally:
        if log is not None:
            log.close()
    print(f"wrote {out}")
    return 0


@contextlib.contextmanager
def _write_errors(out: Path) -> Iterator[None]:
    """A full disk / read-only folder while saving checkpoints or the log → one line
    (the checkpoint is replaced atomically, so the last one saved is intact)."""
    from ..outputs import WRITE_ERRNOS, os_reason
    from . import UserError

    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        raise UserError(
            f"cannot write {out} (or --log): {os_reason(err)}; the last checkpoint saved is "
            "intact: free space and continue with --resume"
        ) from None
