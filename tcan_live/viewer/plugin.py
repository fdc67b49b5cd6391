"""napari plugin (npe2 manifest: ``tcan_live/napari.yaml``): *Plugins > tcan-live* docks a
widget that connects the viewer to a daemon, and a reader opens tcan-live's outputs.

The widget is a thin panel over :class:`tcan_live.viewer.app.LiveView`, the code that
``tcan-live view`` runs: the same layers (raw | enhanced with the uncertainty overlay, one grid
cell per stream and channel), the same status line, the same ``u`` key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy import QtCore, QtWidgets

from tcan_live.commands import DEFAULT_ENDPOINT
from tcan_live.viewer.app import LiveView

if TYPE_CHECKING:
    import napari


class LiveWidget(QtWidgets.QWidget):
    """Endpoint, CURVE key folder, Connect/Disconnect, and the live status line."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.live: LiveView | None = None
        form = QtWidgets.QFormLayout(self)
        self.endpoint = QtWidgets.QLineEdit(DEFAULT_ENDPOINT)
        self.keys = QtWidgets.QLineEdit("")
        self.keys.setPlaceholderText("folder with server.key + client key (remote only)")
        self.button = QtWidgets.QPushButton("Connect")
        self.status = QtWidgets.QLabel("not connected")
        self.status.setWordWrap(True)
        form.addRow("daemon", self.endpoint)
        form.addRow("CURVE keys", self.keys)
        form.addRow(self.button)
        form.addRow(self.status)
        self.button.clicked.connect(self.toggle)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self._refresh)

    def connect_to(self, endpoint: str, keys: str = "") -> None:
        self.disconnect_from()
        self.live = LiveView(self.viewer, endpoint,
                             curve_keys=Path(keys) if keys.strip() else None)
        self.live.start()
        self.button.setText("Disconnect")
        self.timer.start(500)

    def disconnect_from(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.timer.stop()
        self.button.setText("Connect")
        self.status.setText("not connected")

    def toggle(self) -> None:
        if self.live is None:
            self.connect_to(self.endpoint.text().strip(), self.keys.text())
        else:
            self.disconnect_from()

    def _refresh(self) -> None:
        if self.live is not None:
            self.status.setText(self.live.status_line())

    def closeEvent(self, event: Any) -> None:
        self.disconnect_from()
        super().closeEvent(event)
