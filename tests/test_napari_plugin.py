"""Issue 19 (part): the napari plugin. npe2 finds it from the installed package's manifest;
the dock widget connects a viewer to a real publisher (under Xvfb) and shows the same layers as
``tcan-live view``; the reader opens tcan-live's saved outputs with their scale and channels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_viewer import Publisher, _frames, _pump

from tcan_live.export.ometiff import OmeMeta, write_ome_tiff
from tcan_live.viewer.reader import get_reader, read_output


def test_npe2_discovers_the_manifest_and_its_commands() -> None:
    npe2 = pytest.importorskip("npe2")

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("tcan-live")
    ids = {c.id for c in manifest.contributions.commands}
    assert ids == {"tcan-live.live_widget", "tcan-live.get_reader"}
    from npe2.manifest.utils import import_python_name

    for cmd in manifest.contributions.commands:  # each python_name resolves
        assert callable(import_python_name(str(cmd.python_name)))
    readers = list(pm.iter_compatible_readers(["/x/run_tcan.ome.tif"]))
    assert [r.command for r in readers if r.command.startswith("tcan-live")] == \
        ["tcan-live.get_reader"]


def test_reader_opens_an_output_with_scale_and_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.random((3, 2, 32, 40)).astype(np.float32)
    out = tmp_path / "cells_tcan.ome.tif"
    write_ome_tiff(out, data, OmeMeta(axes="TC", pixel_size_um=0.05,
                                      channel_names=["tubulin", "actin"]))
    assert get_reader(str(tmp_path / "other.tif")) is None
    reader = get_reader(str(out))
    assert reader is not None
    (layer,) = reader(str(out))
    arr, meta, kind = layer
    assert kind == "image" and meta["channel_axis"] == 1
    assert meta["name"] == ["cells_tcan tubulin", "cells_tcan actin"]
    assert meta["scale"] == pytest.approx((1.0, 0.05, 0.05))
    np.testing.assert_array_equal(arr, data)
    unc = tmp_path / "cells_uncertainty.ome.tif"
    write_ome_tiff(unc, data[:, 0], OmeMeta(axes="T", pixel_size_um=0.05))
    (u,) = read_output(unc)
    assert u[1]["colormap"] == "inferno" and u[1]["scale"] == pytest.approx((1.0, 0.05, 0.05))


def test_reader_opens_a_growing_ome_zarr_output(tmp_path: Path) -> None:
    """The daemon's OME-Zarr output, read (lazily) while the store is still open for writing."""
    from tcan_live.export.store import OutputStore
    from tcan_live.frame import Frame, FrameIndex

    store = OutputStore(tmp_path / "out", fmt="ome-zarr")
    rng = np.random.default_rng(1)
    planes = {(t, c): rng.random((32, 40), dtype=np.float32) for t in range(2) for c in range(2)}
    for (t, c), plane in planes.items():
        store.add(Frame(plane, FrameIndex(t=t, c=c), stream="cells", channel_name=f"k{c}"),
                  plane, 0.05)
    out = tmp_path / "out" / "cells_tcan.ome.zarr"
    reader = get_reader(str(out) + "/")
    assert reader is not None
    (layer,) = reader(str(out))
    arr, meta, kind = layer
    assert kind == "image" and meta["channel_axis"] == 1
    assert meta["name"] == ["cells_tcan k0", "cells_tcan k1"]
    assert meta["scale"] == pytest.approx((1.0, 1.0, 0.05, 0.05))
    np.testing.assert_array_equal(arr[1, 0, 0], planes[(1, 0)])
    store.close()


@pytest.mark.viewer
def test_dock_widget_connects_and_shows_live_layers(xvfb: str) -> None:
    import napari

    frames = _frames(6)
    pub = Publisher(frames, rate_hz=4, kinds=("raw", "enhanced", "uncertainty"))
    pub.start()
    pub.ready.wait(10)
    viewer = napari.Viewer(show=True)
    try:
        # the way napari opens it: Plugins > tcan-live
        _dock, widget = viewer.window.add_plugin_dock_widget("tcan-live", "tcan-live")
        assert widget.endpoint.text() == "tcp://127.0.0.1:5557"  # loopback by default
        widget.endpoint.setText(pub.endpoint)
        widget.button.click()
        assert widget.live is not None and widget.button.text() == "Disconnect"
        time.sleep(0.5)
        pub.go.set()
        live = widget.live
        _pump(live, lambda: pub.elapsed > 0 and len(live.layers) == 6, 30)
        names = sorted(layer.name for layer in viewer.layers)
        assert "enhanced c0 tubulin" in names and "uncertainty c1 actin" in names
        _pump(live, lambda: "frames/s shown" in widget.status.text(), 5)
        assert "frames/s shown" in widget.status.text()
        widget.button.click()
        assert widget.live is None and widget.status.text() == "not connected"
    finally:
        viewer.close()
