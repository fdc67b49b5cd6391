"""The ``tcan-live`` command line: options -> settings -> one library call per command.

Heavy imports (torch, zmq, napari) happen inside the commands so ``tcan-live --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tcan_live import __version__
from tcan_live.commands import (
    DEFAULT_ENDPOINT,
    PRECISIONS,
    AdaptOptions,
    CalibrateOptions,
    ClusterOptions,
    DemoOptions,
    EnhanceOptions,
    EvaluateOptions,
    ExportCommand,
    KeysOptions,
    ModelOptions,
    ModelsOptions,
    RecordOptions,
    SimulateOptions,
    TrainOptions,
    ViewOptions,
    parse_options,
)
from tcan_live.errors import ConfigError, TcanError

if TYPE_CHECKING:
    from tcan_live.settings import Settings

log = logging.getLogger("tcan_live")
Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return register


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True)


# -----------------------------------------------------------------------------------------
# models


@command("models")
def cmd_models(ns: argparse.Namespace) -> int:
    from tcan_live.sr.card import installed_models, model_dirs, resolve_model

    args = parse_options(ModelsOptions, vars(ns))
    if args.models_action == "export" and args.bioimageio:
        from tcan_live.sr.bioimageio_export import export_bioimageio

        target = args.bioimageio
        if target.suffix.lower() != ".zip":
            raise ConfigError(f"--bioimageio {target}: the package is a .zip file")
        res = export_bioimageio(resolve_model(args.model), target)
        print(f"wrote {res.path}: bioimage.io model package (TorchScript + PyTorch state "
              "dict); bioimage.io test passed")
        return 0
    if args.models_action == "export":
        from tcan_live.sr.onnx_export import export_onnx

        out = export_onnx(resolve_model(args.model), args.out, size=args.size)
        print(f"wrote {out.path}: input (N, 1, {args.size or 'tile'}, ...) normalised tiles; "
              f"max |ONNX - PyTorch| = {out.max_abs_diff:.2e} (output range "
              f"{out.output_range:.3g})")
        return 0
    models = installed_models()
    if not models:
        dirs = ", ".join(map(str, model_dirs())) or "none found"
        print(f"no models installed (searched: {dirs}); train one with `tcan-live train`")
        return 1
    try:
        default = resolve_model(None).name
    except TcanError:
        default = None
    for folder, card in models:
        mark = "*" if folder.name == default else " "
        if isinstance(card, TcanError):
            print(f"{mark} {folder.name:24s} BROKEN: {card}")
        else:
            a = card.architecture
            head = " error-head" if card.error_head is not None else ""
            print(f"{mark} {folder.name:24s} {a.name} unet={list(a.unet_widths)} "
                  f"dfcan={a.dfcan_width} pixel={card.pixel_size_um} um{head}  {folder}")
    return 0


# -----------------------------------------------------------------------------------------
# training side


@command("simulate")
def cmd_simulate(ns: argparse.Namespace) -> int:
    from tcan_live.sim.simulate import Camera, Optics

    args = parse_options(SimulateOptions, vars(ns))
    optics = Optics(pixel_size_um=args.pixel_size_um, confocal_fwhm_nm=args.confocal_fwhm_nm,
                    sted_fwhm_nm=args.sted_fwhm_nm)
    camera = (None if args.photons is None else
              Camera(photons=args.photons, background=args.background))
    structures: Any = tuple(args.structures.split(",")) if args.structures else None
    if args.timelapse:
        from tcan_live.sim.timelapse import TimelapseSpec, write_timelapse

        spec = TimelapseSpec(frames=args.frames, size=args.size, interval_s=args.interval,
                             drift_px_per_frame=args.drift, layout=args.layout, seed=args.seed,
                             channels=args.channels)
        out = write_timelapse(args.out, spec, optics,
                              camera or Camera(photons=60.0, background=3.0))
        print(f"wrote time-lapse to {out}")
        return 0
    from tcan_live.train.dataset import simulate_dataset

    if args.simulator == "broad" and (args.structures or (args.photons is not None and
                                      args.background != 2.0)):
        raise ConfigError("--structures and --background belong to --simulator classic; the "
                          "broad simulator takes --families, --photons and --acq-pixel-nm")
    try:
        paths = simulate_dataset(
            args.out, n=args.n, size=args.size, seed=args.seed, optics=optics,
            camera=camera if args.simulator == "classic" else None,
            structures=structures, simulator=args.simulator,
            families=args.families.split(",") if args.families else None,
            photons=args.photons, pixel_nm=args.acq_pixel_nm)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    print(f"wrote {len(paths)} pairs to {args.out}")
    return 0


@command("train")
def cmd_train(ns: argparse.Namespace) -> int:
    from tcan_live.sr.card import PRESETS
    from tcan_live.train.config import TrainConfig
    from tcan_live.train.run import run_training

    opts = parse_options(TrainOptions, vars(ns))
    if opts.preset not in PRESETS:
        raise ConfigError(f"--preset {opts.preset!r} unknown; choose one of {sorted(PRESETS)}")
    cfg = parse_options(TrainConfig, {**vars(ns), "model_id": opts.id or opts.out.name,
                                      "architecture": PRESETS[opts.preset]})
    return run_training(opts.pairs, opts.out, cfg, planes=_planes(opts.planes),
                        device=opts.device, init=opts.init, restart=opts.restart)


@command("calibrate")
def cmd_calibrate(args: argparse.Namespace) -> int:
    from tcan_live.train.calibrate import run_calibrate

    return run_calibrate(parse_options(CalibrateOptions, vars(args)))


@command("adapt")
def cmd_adapt(args: argparse.Namespace) -> int:
    from tcan_live.train.adapt import run_adapt

    return run_adapt(parse_options(AdaptOptions, vars(args)))


def _planes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"--planes {text!r}: expected plane numbers like 0,1") from None


@command("evaluate")
def cmd_evaluate(ns: argparse.Namespace) -> int:
    from tcan_live.train.evaluate import run_evaluate

    args = parse_options(EvaluateOptions, vars(ns))
    return run_evaluate(args.pairs, model=args.model, device=args.device,
                        planes=_planes(args.planes), limit=args.limit, out=args.out,
                        pixel_size_um=args.pixel_size_um,
                        confocal_fwhm_nm=args.confocal_fwhm_nm, uncertainty=args.uncertainty,
                        write_card=args.write_card)


# -----------------------------------------------------------------------------------------
# inference side


@command("enhance")
def cmd_enhance(args: argparse.Namespace) -> int:
    from tcan_live.enhance_files import enhance_all

    return enhance_all(parse_options(EnhanceOptions, vars(args)))


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from tcan_live.export.run import run_export

    return run_export(parse_options(ExportCommand, vars(args)))


@command("view")
def cmd_view(args: argparse.Namespace) -> int:
    from tcan_live.viewer.app import run_view

    return run_view(parse_options(ViewOptions, vars(args)))


@command("record")
def cmd_record(args: argparse.Namespace) -> int:
    from tcan_live.record import run_record

    return run_record(parse_options(RecordOptions, vars(args)))


@command("watch")
def cmd_watch(args: argparse.Namespace) -> int:
    from tcan_live.daemon import run_watch

    return run_watch(settings_from_args(args))


@command("keys")
def cmd_keys(ns: argparse.Namespace) -> int:
    from tcan_live.transport.publisher import create_keys

    args = parse_options(KeysOptions, vars(ns))
    written = create_keys(args.folder, tuple(args.clients.split(",")))
    print("\n".join(f"wrote {p}" for p in written))
    print("give each viewer its <name>.key_secret and server.key; keep server.key_secret here")
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from tcan_live.demo import run_demo

    return run_demo(parse_options(DemoOptions, vars(args)))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The daemon's settings from ``watch``'s options (defaults < file < environment < flags)."""
    from tcan_live.settings import load_settings

    a = vars(args)

    def path(key: str) -> Path | None:
        return Path(a[key]) if a.get(key) else None

    return load_settings(
        path("config"), folder=path("folder"), output=path("output"), model=a.get("model"),
        device=None if a.get("device") in (None, "auto") else a["device"], tile=a.get("tile"),
        precision=None if a.get("precision") in (None, "auto") else a["precision"],
        restore=a.get("restore"),
        pixel_size_um=a.get("pixel_size_um"), endpoint=a.get("endpoint"), mode=a.get("mode"),
        poll=a.get("poll"), settle_s=a.get("settle"), allow_remote=a.get("allow_remote"),
        curve_keys=path("curve_keys"), insecure=a.get("insecure"), log_file=path("log_file"),
        ingest=a.get("ingest"), panel=False if a.get("no_panel") else None,
        uncertainty=True if a.get("uncertainty") else None, output_format=a.get("format"),
        adapt=True if a.get("adapt") else None, adapt_frames=a.get("adapt_frames"),
        adapt_budget_min=a.get("adapt_budget_min"),
    )


# -----------------------------------------------------------------------------------------
# parser: no option has a default here; the typed options (commands.py, settings.py,
# train/config.py) hold them once, and the help shows them


def _opt(p: argparse.ArgumentParser, cls: type[BaseModel], name: str, *flags: str,
         **kw: Any) -> None:
    """Option ``flags`` (none: a positional ``name``) for field ``name`` of ``cls``: absent from
    the namespace unless given, so the field's default applies; the help shows that default."""
    default = cls.model_fields[name].default
    text = kw.pop("help", None)
    if not (default is None or default is False or default is PydanticUndefined):
        text = f"{text} (default: {default})" if text else f"default: {default}"
    if flags:
        kw["dest"] = name
    p.add_argument(*(flags or (name,)), default=argparse.SUPPRESS,
                   help=text.replace("%", "%%") if text else None, **kw)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    _opt(p, ModelOptions, "model", "--model",
         help="model id or folder (default: the default model)")
    _opt(p, ModelOptions, "device", "--device", help="auto | cpu | cuda | cuda:N")
    _opt(p, ModelOptions, "tile", "--tile", type=int,
         help="largest tile side in px (default: card's)")
    _opt(p, ModelOptions, "precision", "--precision", choices=PRECISIONS,
         help="auto: bf16 autocast on CUDA, fp32 on CPU; bf16 on a CPU with AVX512-BF16/AMX is "
              "faster, see docs/benchmarks.md")
    _opt(p, ModelOptions, "restore", "--restore", action=argparse.BooleanOptionalAction,
         help="put back a regular pattern that the raw frame shows and the network erased, at "
              "the raw frame's amplitude (sr/restore.py; --no-restore: the network's output "
              "as it is)")


def _add_format_option(p: argparse.ArgumentParser, cls: type[BaseModel]) -> None:
    _opt(p, cls, "format", "--format", choices=["ome-tiff", "ome-zarr"],
         help="output format (default: ome-tiff, or what -o's suffix says)")


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    _opt(p, ClusterOptions, "scheduler", "--scheduler",
         help="Dask scheduler, e.g. tcp://HOST:8786")
    _opt(p, ClusterOptions, "workers", "--workers", type=int,
         help="start a local Dask cluster with N worker processes")


def _enhance_parser(sub: Any) -> None:
    p = sub.add_parser("enhance", help="enhance ND2/TIFF files into OME-TIFFs")
    p.add_argument("inputs", nargs="+", help="ND2 / TIFF / OME-TIFF files, NDTiff folders or "
                   "*.zarr / *.ome.zarr datasets")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_format_option(p, EnhanceOptions)
    _add_model_options(p)
    _opt(p, EnhanceOptions, "pixel_size_um", "--pixel-size-um", type=float,
         help="input pixel size when the file has none (or to override it)")
    _opt(p, EnhanceOptions, "keep_model_grid", "--keep-model-grid", action="store_true",
         help="write on the model's pixel grid instead of the input grid")
    _opt(p, EnhanceOptions, "residual", "--residual", action="store_true",
         help="also write the trust-check residual map (<name>_residual.ome.tif)")
    _opt(p, EnhanceOptions, "uncertainty", "--uncertainty", action="store_true",
         help="also write the per-pixel uncertainty map (<name>_uncertainty.ome.tif; float32, "
              "larger = less certain; costs 4 extra passes per plane)")
    _add_cluster_options(p)


def _export_parser(sub: Any) -> None:
    c = ExportCommand
    p = sub.add_parser("export", help="drift-free enhanced time-lapse (OME-TIFF, CSV, movie)")
    p.add_argument("input", help="ND2 / TIFF / OME-TIFF time-lapse, or tcan-live output")
    p.add_argument("-o", "--output", required=True, help="OUT.ome.tif or OUT.ome.zarr")
    _add_format_option(p, c)
    _add_model_options(p)
    _opt(p, c, "drift_correct", "--drift-correct", action=argparse.BooleanOptionalAction)
    _opt(p, c, "reference", "--reference", choices=["first", "previous", "running-mean"])
    _opt(p, c, "drift_channel", "--drift-channel", type=int)
    _opt(p, c, "drift_on", "--drift-on", choices=["raw", "enhanced"])
    _opt(p, c, "smooth", "--smooth", type=int, help="moving-average window (frames)")
    _opt(p, c, "pad", "--pad", action="store_true", help="keep the full field (NaN outside)")
    _opt(p, c, "movie", "--movie", help="OUT.mp4 or OUT.gif")
    _opt(p, c, "save_raw", "--save-raw", action="store_true", help="also OUT_raw.ome.tif")
    _add_cluster_options(p)
    _opt(p, c, "pixel_size_um", "--pixel-size-um", type=float)


def _models_parser(sub: Any) -> None:
    c = ModelsOptions
    p = sub.add_parser("models", help="list installed models, or export one (ONNX, bioimage.io)")
    # no argparse choices: a default-less optional positional would be checked against them
    _opt(p, c, "models_action", nargs="?", metavar="{list,export}")
    _opt(p, c, "model", "--model")
    _opt(p, c, "onnx", "--onnx", action="store_true", help="(export) write ONNX (the default)")
    _opt(p, c, "bioimageio", "--bioimageio", metavar="OUT.zip",
         help="(export) write a bioimage.io model package instead (Fiji/deepImageJ, ilastik, "
              "QuPath; needs the bioimageio extra)")
    _opt(p, c, "out", "--out", help="(export) output .onnx path")
    _opt(p, c, "size", "--size", type=int, help="(export) tile size (card's)")


def _simulate_parser(sub: Any) -> None:
    c = SimulateOptions
    p = sub.add_parser("simulate", help="simulate confocal/STED training pairs or a time-lapse")
    p.add_argument("out", help="output folder")
    _opt(p, c, "n", "--n", type=int, help="number of pairs")
    _opt(p, c, "size", "--size", type=int, help="image size in px")
    _opt(p, c, "seed", "--seed", type=int)
    _opt(p, c, "pixel_size_um", "--pixel-size-um", type=float)
    _opt(p, c, "confocal_fwhm_nm", "--confocal-fwhm-nm", type=float)
    _opt(p, c, "sted_fwhm_nm", "--sted-fwhm-nm", type=float)
    _opt(p, c, "photons", "--photons", type=float,
         help="fixed peak photons (broad: of the brightest confocal pixel; classic: of a "
              "point) (default: random per image)")
    _opt(p, c, "background", "--background", type=float, help="with --photons: photons/px")
    _opt(p, c, "simulator", "--simulator", choices=["broad", "classic"],
         help="broad: many structure families, point-scanning PSFs, point-detector noise; "
              "classic: the earlier four-shape simulator")
    _opt(p, c, "families", "--families",
         help="(broad) comma list of structure families (default: all training families; "
              "docs/training.md lists them and the held-out ones)")
    _opt(p, c, "acq_pixel_nm", "--acq-pixel-nm", type=float,
         help="(broad) acquisition pixel size, a multiple of 10 nm (default: random 30-100 nm)")
    _opt(p, c, "structures", "--structures",
         help="(classic) comma list of filaments,beads,rings,actin (default: mix)")
    _opt(p, c, "timelapse", "--timelapse", action="store_true",
         help="write a time-lapse instead")
    _opt(p, c, "frames", "--frames", type=int, help="(time-lapse) number of frames")
    _opt(p, c, "interval", "--interval", type=float, help="(time-lapse) seconds per frame")
    _opt(p, c, "drift", "--drift", type=float, help="(time-lapse) drift px per frame")
    _opt(p, c, "channels", "--channels", type=int, help="(time-lapse) 1 or 2 channels")
    _opt(p, c, "layout", "--layout", choices=["files", "ome-stack"],
         help="(time-lapse) one TIFF per frame, or one growing OME-TIFF")


def _train_parser(sub: Any) -> None:
    from tcan_live.train.config import TrainConfig as c

    o = TrainOptions
    p = sub.add_parser("train", help="train or fine-tune TCAN on confocal/STED pairs")
    p.add_argument("pairs", help="pair folder or file (see docs/training.md)")
    p.add_argument("--out", required=True, help="model folder to write (resumes if present)")
    _opt(p, o, "id", "--id", help="model id (default: the folder name)")
    _opt(p, o, "preset", "--preset", help="tcan (paper widths) | small | tiny")
    for name, kind in (("steps", int), ("batch", int), ("patch", int), ("w_pixel", float),
                       ("w_adv", float), ("w_ssim", float), ("lr_g", float), ("lr_d", float),
                       ("val_every", int), ("checkpoint_every", int),
                       ("val_fraction", float), ("seed", int)):
        _opt(p, c, name, "--" + name.replace("_", "-"), type=kind)
    _opt(p, c, "pixel_loss", "--pixel-loss", choices=["mse", "l1"])
    _opt(p, c, "max_hours", "--max-hours", type=float, help="stop (and save) after this")
    _opt(p, o, "planes", "--planes", help="confocal,STED plane of pair stacks")
    _opt(p, c, "pixel_size_um", "--pixel-size-um", type=float, help="pixel size of the pairs")
    _opt(p, o, "init", "--init", help="start from this model (transfer learning)")
    _opt(p, o, "restart", "--restart", action="store_true",
         help="ignore an existing checkpoint")
    _opt(p, o, "device", "--device")


def _calibrate_parser(sub: Any) -> None:
    c = CalibrateOptions
    p = sub.add_parser("calibrate", help="train a model's error head on simulated pairs (the "
                       "uncertainty map then predicts the error; sr/error_head.py)")
    p.add_argument("model", help="model folder or id (its folder is written into)")
    _opt(p, c, "images", "--images", type=int,
         help="simulated fields per training family (and half as many mixed ones in all)")
    _opt(p, c, "steps", "--steps", type=int, help="optimiser steps")
    _opt(p, c, "width", "--width", type=int, help="channels of the head")
    _opt(p, c, "passes", "--passes", type=int, help="noise redraws of the spread")
    _opt(p, c, "seed", "--seed", type=int)
    _opt(p, c, "size", "--size", type=int, help="field size in 50 nm pixels")
    _opt(p, c, "device", "--device")


def _adapt_parser(sub: Any) -> None:
    c = AdaptOptions
    p = sub.add_parser("adapt", help="fit a model to your own sample from its confocal frames "
                       "(no STED needed; self-supervised)")
    p.add_argument("inputs", nargs="+", help="ND2 / TIFF / OME-TIFF files, NDTiff folders, "
                   "zarr datasets or folders of them: confocal frames of your sample")
    p.add_argument("--out", required=True, help="model folder to write (resumes if present)")
    _opt(p, c, "id", "--id", help="model id (default: the folder name)")
    _opt(p, c, "init", "--init", help="model to start from (default: the default model)")
    _opt(p, c, "budget_min", "--budget-min", type=float, help="minutes of adaptation")
    _opt(p, c, "steps", "--steps", type=int, help="at most this many steps")
    _opt(p, c, "max_frames", "--max-frames", type=int, help="use the first N frames")
    _opt(p, c, "channel", "--channel", type=int, help="channel to adapt on")
    _opt(p, c, "pixel_size_um", "--pixel-size-um", type=float,
         help="input pixel size when the files have none (or to override it)")
    _opt(p, c, "prior_weight", "--prior-weight", type=float,
         help="how strongly the output stays near the initial model's")
    _opt(p, c, "relaxed_prior_weight", "--relaxed-prior-weight", type=float,
         help="also adapt with this weaker prior (half the budget each) and keep that model "
              "only where the held-out frames show the initial model wrong at confocal "
              "resolution (the --prior-weight value: one run only)")
    _opt(p, c, "floor_weight", "--floor-weight", type=float,
         help="how strongly the output is kept from going below the frame's background "
              "where the initial model's did not (0: off)")
    _opt(p, c, "confocal_fwhm_nm", "--confocal-fwhm-nm", type=float,
         help="FWHM of your confocal PSF (default: the model card's, 230 nm)")
    _opt(p, c, "device", "--device")
    _opt(p, c, "seed", "--seed", type=int)


def _evaluate_parser(sub: Any) -> None:
    c = EvaluateOptions
    p = sub.add_parser("evaluate", help="paper metrics of a model on confocal/STED pairs")
    p.add_argument("pairs", help="pair folder or file")
    _opt(p, c, "model", "--model")
    _opt(p, c, "out", "--out", help="folder for CSV, Markdown and plots")
    _opt(p, c, "planes", "--planes")
    _opt(p, c, "pixel_size_um", "--pixel-size-um", type=float,
         help="pixel size of the pairs when the files do not say")
    _opt(p, c, "confocal_fwhm_nm", "--confocal-fwhm-nm", type=float,
         help="PSF for Richardson-Lucy and the trust check")
    _opt(p, c, "device", "--device")
    _opt(p, c, "limit", "--limit", type=int, help="evaluate the first N pairs only")
    _opt(p, c, "uncertainty", "--uncertainty", action="store_true",
         help="also score the uncertainty map (AUROC for the top-10% error pixels, and how its "
              "frame score ranks the images)")
    _opt(p, c, "write_card", "--write-card", metavar="LABEL[:NOTE]",
         help="store the medians in the model card's [metrics.LABEL]")


def _watch_parser(sub: Any) -> None:
    # the daemon's defaults are Settings' (defaults < TOML < environment < these flags)
    p = sub.add_parser("watch", help="the daemon: watch a folder, enhance and publish new frames")
    p.add_argument("folder", nargs="?", help="acquisition folder to watch")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--output", help="where the enhanced stacks go")
    p.add_argument("--format", choices=["ome-tiff", "ome-zarr"],
                   help="output format (default: ome-tiff)")
    p.add_argument("--endpoint", help=f"publish endpoint (default: {DEFAULT_ENDPOINT})")
    p.add_argument("--mode", choices=["all", "latest"])
    p.add_argument("--poll", action="store_true", default=None,
                   help="poll the folder instead of OS events (network shares)")
    p.add_argument("--settle", type=float, help="seconds a file must be quiet")
    p.add_argument("--allow-remote", action="store_true", default=None,
                   help="allow binding a non-loopback interface (use with --curve-keys)")
    p.add_argument("--curve-keys",
                   help="folder with CURVE server/client keys (publisher and ingest)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="with --allow-remote: run without CURVE keys (anyone can connect)")
    p.add_argument("--log-file")
    p.add_argument("--no-panel", action="store_true", default=None,
                   help="plain logs even on a terminal")
    p.add_argument("--pixel-size-um", type=float,
                   help="input pixel size; overrides what the files record")
    p.add_argument("--ingest", help="also accept pushed frames on this endpoint")
    p.add_argument("--uncertainty", action="store_true", default=None,
                   help="also compute, publish and save each frame's uncertainty map "
                        "(4 extra forward passes per frame; docs/protocol.md)")
    p.add_argument("--adapt", action="store_true", default=None,
                   help="adapt the model to the first frames in the background (tcan-live "
                        "adapt), then switch to it between frames (docs/training.md)")
    p.add_argument("--adapt-frames", type=int, help="frames to adapt on (default: 8)")
    p.add_argument("--adapt-budget-min", type=float,
                   help="minutes of adaptation (default: 10)")
    _add_model_options(p)


def _client_parsers(sub: Any) -> None:
    p = sub.add_parser("view", help="napari window: raw and enhanced frames, live")
    _opt(p, ViewOptions, "address", nargs="?")
    _opt(p, ViewOptions, "buffer", "--buffer", type=int, help="frames kept per layer")
    _opt(p, ViewOptions, "fps", "--fps", type=float, help="most layer updates per second")
    _opt(p, ViewOptions, "curve_keys", "--curve-keys",
         help="folder with server.key + client key")

    c = RecordOptions
    p = sub.add_parser("record", help="save what the daemon publishes (headless)")
    _opt(p, c, "address", nargs="?")
    p.add_argument("-o", "--output", required=True, help="OUT.ome.tif")
    _opt(p, c, "kind", "--kind", choices=["enhanced", "raw"])
    _opt(p, c, "frames", "--frames", type=int, help="stop after N frames")
    _opt(p, c, "duration", "--duration", type=float, help="stop after S seconds")
    _opt(p, c, "idle", "--idle", type=float, help="stop after S seconds of silence")
    _opt(p, c, "fill_from", "--fill-from", help="daemon output folder to fill gaps")
    _opt(p, c, "curve_keys", "--curve-keys")

    p = sub.add_parser("keys", help="create CURVE keys for remote viewers")
    p.add_argument("folder", help="where to write the keys")
    _opt(p, KeysOptions, "clients", "--clients", help="comma-separated client names")

    p = sub.add_parser("demo", help="simulate a live acquisition and watch it (the main job)")
    _opt(p, DemoOptions, "frames", "--frames", type=int)
    _opt(p, DemoOptions, "size", "--size", type=int)
    _opt(p, DemoOptions, "interval", "--interval", type=float)
    _opt(p, DemoOptions, "out", "--out", help="folder for the montage and outputs")
    _add_model_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcan-live",
        description="Live TCAN super-resolution for confocal time-lapses: watch a folder, "
        "enhance every new frame, publish raw and enhanced frames over ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"tcan-live {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_enhance_parser, _export_parser, _models_parser, _simulate_parser,
                _train_parser, _adapt_parser, _calibrate_parser, _evaluate_parser,
                _watch_parser, _client_parsers):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except TcanError as err:  # the user's input or configuration: a plain one-line message
        if args.debug:
            raise
        print(f"tcan-live: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tcan-live: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # anything else is a bug or the system's: one line, exit 1
        if args.debug:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"tcan-live: error: {type(err).__name__}: {first} (run with --debug for the "
              "traceback; please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
