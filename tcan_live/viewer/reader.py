"""napari reader for tcan-live's outputs (the plugin's reader contribution; no Qt here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OUTPUT_SUFFIXES = ("_tcan.ome.tif", "_uncertainty.ome.tif", "_tcan.ome.zarr",
                   "_uncertainty.ome.zarr")


def get_reader(path: str | list[str]) -> Any:
    """napari reader hook: tcan-live's enhanced / uncertainty OME-TIFF, else None."""
    if isinstance(path, list):
        return None if not all(_ours(p) for p in path) else _read_all
    return _read_all if _ours(path) else None


def _ours(path: str) -> bool:
    return str(path).rstrip("/\\").endswith(OUTPUT_SUFFIXES)


def _read_all(path: str | list[str]) -> list[tuple[Any, dict[str, Any], str]]:
    return [layer for p in ([path] if isinstance(path, str) else path) for layer in read_output(p)]


def read_output(path: str | Path) -> list[tuple[Any, dict[str, Any], str]]:
    """One image layer per OME Image (position): axes as saved (T, C, Z), the pixel size as
    scale, channel names, and the uncertainty map in the inferno colour map."""
    import tifffile

    path = Path(path)
    if path.name.endswith(".ome.zarr"):
        return _read_zarr(path)
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


def _read_zarr(path: Path) -> list[tuple[Any, dict[str, Any], str]]:
    """An OME-Zarr output (export/omezarr.py), lazily: one layer per position (multiscale),
    axes T, C, Z, Y, X with the channels split into layers, the NGFF scales. Readable while
    the daemon is still writing it (the shape is the one on disk when opened)."""
    import zarr

    group: Any = zarr.open_group(str(path), mode="r")
    ome: dict[str, Any] = dict(group.attrs.get("ome", {}))
    names = [c.get("label", f"C{i}") for i, c in
             enumerate(ome.get("omero", {}).get("channels", []))]
    unc = path.name.endswith("_uncertainty.ome.zarr")
    multiscales = ome.get("multiscales", [])
    layers = []
    for ms in multiscales:
        ds = ms["datasets"][0]
        data = group[ds["path"]]
        scale = next(t["scale"] for t in ds["coordinateTransformations"] if t["type"] == "scale")
        stem = path.name.removesuffix(".ome.zarr")
        meta: dict[str, Any] = {"name": stem + (f" {ms.get('name')}" if len(multiscales) > 1
                                                else "")}
        n_c = data.shape[1]
        if n_c > 1:
            meta["channel_axis"] = 1
            meta["name"] = [f"{meta['name']} {names[c] if c < len(names) else f'C{c}'}"
                            for c in range(n_c)]
            scale = [scale[0], *scale[2:]]
        meta["scale"] = tuple(float(v) for v in scale)
        if unc:
            meta.update(colormap="inferno", blending="additive", opacity=0.6)
        layers.append((data, meta, "image"))
    return layers
