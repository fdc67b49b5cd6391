"""The ``tcan-live`` command line: options -> settings -> one library call per command.

Heavy imports (torch, zmq, napari) happen inside the commands so ``tcan-live --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tcan_live import __version__
from tcan_live.errors import ConfigError, TcanError

if TYPE_CHECKING:
    from tcan_live.settings import Settings

log = logging.getLogger("tcan_live")
Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # the Enhancer's ``precision``


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
def cmd_models(args: argparse.Namespace) -> int:
    from tcan_live.sr.card import installed_models, model_dirs, resolve_model

    if args.models_action == "export" and args.bioimageio:
        from tcan_live.sr.bioimageio_export import export_bioimageio

        target = Path(args.bioimageio)
        if target.suffix.lower() != ".zip":
            raise ConfigError(f"--bioimageio {target}: the package is a .zip file")
        res = export_bioimageio(resolve_model(args.model), target)
        print(f"wrote {res.path}: bioimage.io model package (TorchScript + PyTorch state "
              "dict); bioimage.io test passed")
        return 0
    if args.models_action == "export":
        from tcan_live.sr.onnx_export import export_onnx

        out = export_onnx(resolve_model(args.model), Path(args.out) if args.out else None,
                          size=args.size)
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
            print(f"{mark} {folder.name:24s} {a.name} unet={list(a.unet_widths)} "
                  f"dfcan={a.dfcan_width} pixel={card.pixel_size_um} um  {folder}")
    return 0


# -----------------------------------------------------------------------------------------
# training side


@command("simulate")
def cmd_simulate(args: argparse.Namespace) -> int:
    from tcan_live.sim.simulate import Camera, Optics

    for name, value, low in (("--n", args.n, 1), ("--size", args.size, 16),
                             ("--frames", args.frames, 1), ("--channels", args.channels, 1)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low} (got {value})")
    if args.pixel_size_um <= 0 or (args.photons is not None and args.photons <= 0):
        raise ConfigError("--pixel-size-um and --photons must be positive")
    optics = Optics(pixel_size_um=args.pixel_size_um, confocal_fwhm_nm=args.confocal_fwhm_nm,
                    sted_fwhm_nm=args.sted_fwhm_nm)
    camera = (None if args.photons is None else
              Camera(photons=args.photons, background=args.background))
    structures = tuple(args.structures.split(",")) if args.structures else None
    if args.timelapse:
        from tcan_live.sim.timelapse import TimelapseSpec, write_timelapse

        spec = TimelapseSpec(frames=args.frames, size=args.size, interval_s=args.interval,
                             drift_px_per_frame=args.drift, layout=args.layout, seed=args.seed,
                             channels=args.channels)
        out = write_timelapse(Path(args.out), spec, optics,
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
            Path(args.out), n=args.n, size=args.size, seed=args.seed, optics=optics,
            camera=camera if args.simulator == "classic" else None,
            structures=structures, simulator=args.simulator,
            families=args.families.split(",") if args.families else None,
            photons=args.photons, pixel_nm=args.acq_pixel_nm)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    print(f"wrote {len(paths)} pairs to {args.out}")
    return 0


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from tcan_live.sr.card import PRESETS
    from tcan_live.train.run import run_training
    from tcan_live.train.trainer import TrainConfig

    if args.preset not in PRESETS:
        raise ConfigError(f"--preset {args.preset!r} unknown; choose one of {sorted(PRESETS)}")
    cfg = TrainConfig(
        model_id=args.id or Path(args.out).name, architecture=PRESETS[args.preset],
        steps=args.steps, batch=args.batch, patch=args.patch, lr_g=args.lr_g, lr_d=args.lr_d,
        w_pixel=args.w_pixel, w_adv=args.w_adv, w_ssim=args.w_ssim, pixel_loss=args.pixel_loss,
        val_fraction=args.val_fraction, val_every=args.val_every,
        checkpoint_every=args.checkpoint_every, seed=args.seed, max_hours=args.max_hours,
        pixel_size_um=args.pixel_size_um)
    return run_training(Path(args.pairs), Path(args.out), cfg, planes=_planes(args.planes),
                        device=args.device, init=Path(args.init) if args.init else None,
                        restart=args.restart)


def _planes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"--planes {text!r}: expected plane numbers like 0,1") from None


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from tcan_live.train.evaluate import run_evaluate

    return run_evaluate(Path(args.pairs), model=args.model, device=args.device,
                        planes=_planes(args.planes), limit=args.limit,
                        out=Path(args.out) if args.out else None,
                        pixel_size_um=args.pixel_size_um,
                        confocal_fwhm_nm=args.confocal_fwhm_nm, uncertainty=args.uncertainty,
                        write_card=args.write_card)


# -----------------------------------------------------------------------------------------
# inference side


@command("enhance")
def cmd_enhance(args: argparse.Namespace) -> int:
    from tcan_live.commands import EnhanceOptions, parse_options
    from tcan_live.enhance_files import enhance_all

    return enhance_all(parse_options(EnhanceOptions, vars(args)))


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from tcan_live.commands import ExportCommand, parse_options
    from tcan_live.export.run import run_export

    return run_export(parse_options(ExportCommand, vars(args)))


@command("view")
def cmd_view(args: argparse.Namespace) -> int:
    from tcan_live.viewer.app import view_from_cli

    return view_from_cli(args)


@command("record")
def cmd_record(args: argparse.Namespace) -> int:
    from tcan_live.commands import RecordOptions, parse_options
    from tcan_live.record import run_record

    return run_record(parse_options(RecordOptions, vars(args)))


@command("watch")
def cmd_watch(args: argparse.Namespace) -> int:
    from tcan_live.daemon import run_watch

    return run_watch(settings_from_args(args))


@command("keys")
def cmd_keys(args: argparse.Namespace) -> int:
    from tcan_live.transport.publisher import create_keys

    written = create_keys(Path(args.folder), tuple(args.clients.split(",")))
    print("\n".join(f"wrote {p}" for p in written))
    print("give each viewer its <name>.key_secret and server.key; keep server.key_secret here")
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from tcan_live.commands import DemoOptions, parse_options
    from tcan_live.demo import run_demo

    return run_demo(parse_options(DemoOptions, vars(args)))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The daemon's settings from ``watch``'s options (defaults < file < environment < flags)."""
    from tcan_live.settings import load_settings

    return load_settings(
        Path(args.config) if args.config else None,
        folder=Path(args.folder) if args.folder else None,
        output=Path(args.output) if args.output else None, model=args.model,
        device=None if args.device == "auto" else args.device, tile=args.tile,
        precision=None if args.precision == "auto" else args.precision,
        pixel_size_um=args.pixel_size_um, endpoint=args.endpoint, mode=args.mode,
        poll=args.poll, settle_s=args.settle, allow_remote=args.allow_remote,
        curve_keys=Path(args.curve_keys) if args.curve_keys else None,
        insecure=args.insecure,
        log_file=Path(args.log_file) if args.log_file else None, ingest=args.ingest,
        panel=False if args.no_panel else None,
        uncertainty=True if args.uncertainty else None, output_format=args.format,
    )



# -----------------------------------------------------------------------------------------
# parser


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model id or folder (default: the default model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--tile", type=int, default=None,
                   help="largest tile side in px (default: card's)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 autocast on CUDA, fp32 on CPU; bf16 on a CPU with "
                        "AVX512-BF16/AMX is faster, see docs/benchmarks.md")


def _add_format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default=None, choices=["ome-tiff", "ome-zarr"],
                   help="output format (default: ome-tiff, or what -o's suffix says)")


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", default=None, help="Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--workers", type=int, default=None,
                   help="start a local Dask cluster with N worker processes")


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

    p = sub.add_parser("enhance", help="enhance ND2/TIFF files into OME-TIFFs")
    p.add_argument("inputs", nargs="+", help="ND2 / TIFF / OME-TIFF files, NDTiff folders or "
                   "*.zarr / *.ome.zarr datasets")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_format_option(p)
    _add_model_options(p)
    p.add_argument("--pixel-size-um", type=float, default=None,
                   help="input pixel size when the file has none (or to override it)")
    p.add_argument("--keep-model-grid", action="store_true",
                   help="write on the model's pixel grid instead of the input grid")
    p.add_argument("--residual", action="store_true",
                   help="also write the trust-check residual map (<name>_residual.ome.tif)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write the per-pixel uncertainty map (<name>_uncertainty.ome.tif; "
                        "float32, larger = less certain; costs 4 extra passes per plane)")
    _add_cluster_options(p)

    p = sub.add_parser("export", help="drift-free enhanced time-lapse (OME-TIFF, CSV, movie)")
    p.add_argument("input", help="ND2 / TIFF / OME-TIFF time-lapse, or tcan-live output")
    p.add_argument("-o", "--output", required=True, help="OUT.ome.tif or OUT.ome.zarr")
    _add_format_option(p)
    _add_model_options(p)
    p.add_argument("--drift-correct", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--reference", choices=["first", "previous", "running-mean"],
                   default="first")
    p.add_argument("--drift-channel", type=int, default=0)
    p.add_argument("--drift-on", choices=["raw", "enhanced"], default="raw")
    p.add_argument("--smooth", type=int, default=1, help="moving-average window (frames)")
    p.add_argument("--pad", action="store_true", help="keep the full field (NaN outside)")
    p.add_argument("--movie", default=None, help="OUT.mp4 or OUT.gif")
    p.add_argument("--save-raw", action="store_true", help="also OUT_raw.ome.tif")
    _add_cluster_options(p)
    p.add_argument("--pixel-size-um", type=float, default=None)

    p = sub.add_parser("models", help="list installed models, or export one (ONNX, bioimage.io)")
    p.add_argument("models_action", nargs="?", choices=["list", "export"], default="list")
    p.add_argument("--model", default=None)
    p.add_argument("--onnx", action="store_true", help="(export) write ONNX (the default)")
    p.add_argument("--bioimageio", default=None, metavar="OUT.zip",
                   help="(export) write a bioimage.io model package instead (Fiji/deepImageJ, "
                        "ilastik, QuPath; needs the bioimageio extra)")
    p.add_argument("--out", default=None, help="(export) output .onnx path")
    p.add_argument("--size", type=int, default=None, help="(export) tile size (card's)")

    p = sub.add_parser("simulate", help="simulate confocal/STED training pairs or a time-lapse")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=100, help="number of pairs")
    p.add_argument("--size", type=int, default=256, help="image size in px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pixel-size-um", type=float, default=0.05)
    p.add_argument("--confocal-fwhm-nm", type=float, default=230.0)
    p.add_argument("--sted-fwhm-nm", type=float, default=80.0)
    p.add_argument("--photons", type=float, default=None,
                   help="fixed peak photons (broad: of the brightest confocal pixel; classic: "
                        "of a point) (default: random per image)")
    p.add_argument("--background", type=float, default=2.0, help="with --photons: photons/px")
    p.add_argument("--simulator", choices=["broad", "classic"], default="broad",
                   help="broad: many structure families, point-scanning PSFs, point-detector "
                        "noise (default); classic: the earlier four-shape simulator")
    p.add_argument("--families", default=None,
                   help="(broad) comma list of structure families (default: all training "
                        "families; docs/training.md lists them and the held-out ones)")
    p.add_argument("--acq-pixel-nm", type=float, default=None,
                   help="(broad) acquisition pixel size, a multiple of 10 nm (default: random "
                        "30-100 nm)")
    p.add_argument("--structures", default=None,
                   help="(classic) comma list of filaments,beads,rings,actin (default: mix)")
    p.add_argument("--timelapse", action="store_true", help="write a time-lapse instead")
    p.add_argument("--frames", type=int, default=20, help="(time-lapse) number of frames")
    p.add_argument("--interval", type=float, default=0.0, help="(time-lapse) seconds per frame")
    p.add_argument("--drift", type=float, default=0.3, help="(time-lapse) drift px per frame")
    p.add_argument("--channels", type=int, default=1, help="(time-lapse) 1 or 2 channels")
    p.add_argument("--layout", choices=["files", "ome-stack"], default="files",
                   help="(time-lapse) one TIFF per frame, or one growing OME-TIFF")

    p = sub.add_parser("train", help="train or fine-tune TCAN on confocal/STED pairs")
    p.add_argument("pairs", help="pair folder or file (see docs/training.md)")
    p.add_argument("--out", required=True, help="model folder to write (resumes if present)")
    p.add_argument("--id", default=None, help="model id (default: the folder name)")
    p.add_argument("--preset", default="small", help="tcan (paper widths) | small | tiny")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--pixel-loss", choices=["mse", "l1"], default="mse")
    p.add_argument("--w-pixel", type=float, default=1.0)
    p.add_argument("--w-adv", type=float, default=0.01)
    p.add_argument("--w-ssim", type=float, default=1.0)
    p.add_argument("--lr-g", type=float, default=1e-4)
    p.add_argument("--lr-d", type=float, default=5e-5)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--max-hours", type=float, default=None, help="stop (and save) after this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planes", default="0,1", help="confocal,STED plane of pair stacks")
    p.add_argument("--pixel-size-um", type=float, default=0.05, help="pixel size of the pairs")
    p.add_argument("--init", default=None, help="start from this model (transfer learning)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("evaluate", help="paper metrics of a model on confocal/STED pairs")
    p.add_argument("pairs", help="pair folder or file")
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=None, help="folder for CSV, Markdown and plots")
    p.add_argument("--planes", default="0,1")
    p.add_argument("--pixel-size-um", type=float, default=None,
                   help="pixel size of the pairs when the files do not say")
    p.add_argument("--confocal-fwhm-nm", type=float, default=230.0,
                   help="PSF for Richardson-Lucy and the trust check")
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs only")
    p.add_argument("--uncertainty", action="store_true",
                   help="also score the uncertainty map (AUROC for the top-10%% error pixels, "
                        "and how its frame score ranks the images)")
    p.add_argument("--write-card", default=None, metavar="LABEL[:NOTE]",
                   help="store the medians in the model card's [metrics.LABEL]")

    p = sub.add_parser("watch", help="the daemon: watch a folder, enhance and publish new frames")
    p.add_argument("folder", nargs="?", default=None, help="acquisition folder to watch")
    p.add_argument("--config", default=None, help="TOML configuration file")
    p.add_argument("--output", default=None, help="where the enhanced stacks go")
    _add_format_option(p)
    p.add_argument("--endpoint", default=None, help="publish endpoint (tcp://127.0.0.1:5557)")
    p.add_argument("--mode", choices=["all", "latest"], default=None)
    p.add_argument("--poll", action="store_true", default=None,
                   help="poll the folder instead of OS events (network shares)")
    p.add_argument("--settle", type=float, default=None, help="seconds a file must be quiet")
    p.add_argument("--allow-remote", action="store_true", default=None,
                   help="allow binding a non-loopback interface (use with --curve-keys)")
    p.add_argument("--curve-keys", default=None,
                   help="folder with CURVE server/client keys (publisher and ingest)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="with --allow-remote: run without CURVE keys (anyone can connect)")
    p.add_argument("--log-file", default=None)
    p.add_argument("--no-panel", action="store_true", help="plain logs even on a terminal")
    p.add_argument("--pixel-size-um", type=float, default=None,
                   help="input pixel size; overrides what the files record")
    p.add_argument("--ingest", default=None, help="also accept pushed frames on this endpoint")
    p.add_argument("--uncertainty", action="store_true", default=None,
                   help="also compute, publish and save each frame's uncertainty map "
                        "(4 extra forward passes per frame; docs/protocol.md)")
    _add_model_options(p)

    p = sub.add_parser("view", help="napari window: raw and enhanced frames, live")
    p.add_argument("address", nargs="?", default="tcp://127.0.0.1:5557")
    p.add_argument("--buffer", type=int, default=50, help="frames kept per layer")
    p.add_argument("--fps", type=float, default=10.0, help="most layer updates per second")
    p.add_argument("--curve-keys", default=None, help="folder with server.key + client key")

    p = sub.add_parser("record", help="save what the daemon publishes (headless)")
    p.add_argument("address", nargs="?", default="tcp://127.0.0.1:5557")
    p.add_argument("-o", "--output", required=True, help="OUT.ome.tif")
    p.add_argument("--kind", choices=["enhanced", "raw"], default="enhanced")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--idle", type=float, default=30.0, help="stop after S seconds of silence")
    p.add_argument("--fill-from", default=None, help="daemon output folder to fill gaps")
    p.add_argument("--curve-keys", default=None)

    p = sub.add_parser("keys", help="create CURVE keys for remote viewers")
    p.add_argument("folder", help="where to write the keys")
    p.add_argument("--clients", default="viewer", help="comma-separated client names")

    p = sub.add_parser("demo", help="simulate a live acquisition and watch it (the main job)")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--out", default="demo-output", help="folder for the montage and outputs")
    _add_model_options(p)
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
