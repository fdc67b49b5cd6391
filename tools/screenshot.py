"""Screenshot of the live viewer on a simulated acquisition (for the README).

    xvfb-run -s "-screen 0 1600x1000x24" \
        python tools/screenshot.py docs/images/viewer.png

Runs the daemon with the default model on a simulated two-colour live time-lapse, opens the
napari viewer on it, waits until frames are shown, and saves a screenshot of the window.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path


def main(out: str = "docs/images/viewer.png", frames: str | int = 8) -> int:
    frames = int(frames)
    import napari
    from qtpy.QtWidgets import QApplication

    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings
    from tcan_live.sim.timelapse import TimelapseSpec, write_timelapse
    from tcan_live.viewer.app import LiveView

    with tempfile.TemporaryDirectory() as tmp:
        acq = Path(tmp) / "acq"
        acq.mkdir()
        d = Daemon(Settings(folder=acq, output=Path(tmp) / "out", endpoint="tcp://127.0.0.1:*",
                            settle_s=0.5))
        d.start()
        while d.publisher is None:
            time.sleep(0.05)
        viewer = napari.Viewer(title="tcan-live view", show=True)
        viewer.window.resize(1500, 900)
        live = LiveView(viewer, d.publisher.endpoint, buffer=frames)
        live.start()
        time.sleep(0.5)
        spec = TimelapseSpec(frames=frames, size=256, channels=2, interval_s=1.0, seed=11,
                             n_filaments=18, name="cells")
        writer = threading.Thread(target=write_timelapse, args=(acq, spec), daemon=True)
        writer.start()
        deadline = time.monotonic() + frames * 30
        while time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
            if not writer.is_alive() and len(live.layers) == 4 and all(
                    st.last_seq >= 2 * frames - 2 for st in live.layers.values()):
                break
        for _ in range(50):
            QApplication.processEvents()
            time.sleep(0.02)
        viewer.screenshot(out, canvas_only=False, flash=False)
        live.stop()
        viewer.close()
        d.stop()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
