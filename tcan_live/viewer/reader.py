"""napari reader for tcan-live's outputs (the plugin's reader contribution; no Qt here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OUTPUT_SUFFIXES = ("_tcan.ome.tif", "_uncertainty.ome.tif")


def get_reader(path: str | list[str]) -> Any:
    """napari reader hook: tcan-live's enhanced / uncertainty OME-TIFF, else None."""
    if isinstance(path, list):
        return None if not all(_ours(p) for p in path) else _read_all
    return _read_all if _ours(path) else None


def _ours(path: str) -> bool:
    return str(path).endswith(OUTPUT_SUFFIXES)


def _read_all(path: str | list[str]) -> list[tuple[Any, dict[str, Any], str]]:
    return [layer for p in ([path] if isinstance(path, str) else path) for layer in read_output(p)]


def read_output(path: str | Path) -> list[tuple[Any, dict[str, Any], str]]:
    """One image layer per OME Image (position): axes as saved (T, C, Z), the pixel size as
    scale, channel names, and the uncertainty map in the inferno colour map."""
    import tifffile

    path = Path(path)
    unc = path.name.endswith("_uncertainty.ome.tif")
    layers = []
    with tifffile.TiffFile(path) as tif:
        images = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"] if tif.ome_metadata \
            else []
        images = images if isinstance(images, list) else [images]
        for k, series in enumerate(tif.series):
            data = series.asarray()
            axes = series.axes
            pix = images[k]["Pixels"] if k < len(images) else {}
            px = float(pix.get("PhysicalSizeX", 1.0) or 1.0)
            chans = pix.get("Channel", [])
            chans = chans if isinstance(chans, list) else [chans]
            names = [str(c.get("Name", f"C{i}")) for i, c in enumerate(chans)]
            meta: dict[str, Any] = {"name": path.name.removesuffix(".ome.tif")
                                    + (f" P{k}" if len(tif.series) > 1 else "")}
            if "C" in axes and len(names) == data.shape[axes.index("C")] > 1:
                meta["channel_axis"] = axes.index("C")
                meta["name"] = [f"{meta['name']} {n}" for n in names]
                axes = axes.replace("C", "")
            meta["scale"] = tuple([1.0] * (len(axes) - 2) + [px, px])
            if unc:
                meta.update(colormap="inferno", blending="additive", opacity=0.6)
            layers.append((data, meta, "image"))
    return layers
