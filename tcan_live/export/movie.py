"""Movies for talks and papers: raw | enhanced side by side, scale bar, time stamp.

One channel: grey for both halves, so that they compare directly. Two channels: composites in
the paper's dual-colour convention (channel 0 microtubules magenta, channel 1 actin cyan).
Per-channel contrast is fixed over the whole movie (0.5 / 99.8 percentiles), so intensities are
comparable between frames.
MP4 through imageio-ffmpeg (bundled binary), GIF through Pillow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.errors import ConfigError

COLOURS = (np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]))  # magenta, cyan


def _limits(stack: np.ndarray) -> list[tuple[float, float]]:
    """Per-channel display limits over the whole movie (stack: T, C, Z, Y, X)."""
    out = []
    for c in range(stack.shape[1]):
        v = stack[:, c][np.isfinite(stack[:, c])]
        lo, hi = np.percentile(v, [0.5, 99.8]) if v.size else (0.0, 1.0)
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return out


def _rgb(frame: np.ndarray, limits: list[tuple[float, float]]) -> np.ndarray:
    """(C, Y, X) -> (Y, X, 3) uint8."""
    img = np.zeros((*frame.shape[1:], 3))
    for c, (lo, hi) in enumerate(limits):
        v = np.clip((np.nan_to_num(frame[c], nan=lo) - lo) / (hi - lo), 0, 1)
        colour = COLOURS[c % 2] if len(limits) > 1 else np.ones(3)
        img += v[..., None] * colour
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _scale_bar_um(width_um: float) -> float:
    for candidate in (0.5, 1, 2, 5, 10, 20, 50, 100):
        if candidate >= width_um / 6:
            return float(candidate)
    return 100.0


def render_frames(raw: np.ndarray | None, enhanced: np.ndarray, px: float | None,
                  dt: float | None) -> list[np.ndarray]:
    from PIL import Image, ImageDraw

    mid = enhanced.shape[2] // 2  # the middle z plane
    lim_e = _limits(enhanced)
    lim_r = _limits(raw) if raw is not None else None
    frames = []
    for t in range(enhanced.shape[0]):
        panels = [_rgb(enhanced[t, :, mid], lim_e)]
        if raw is not None and lim_r is not None:
            panels.insert(0, _rgb(raw[t, :, mid], lim_r))
        gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
        img = np.concatenate([p for pair in zip(panels, [gap] * len(panels), strict=True)
                              for p in pair][:-1], axis=1)
        scale = max(1, 512 // max(img.shape[0], 1))
        pil = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale),
                                          Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(pil)
        h, w = pil.size[1], panels[0].shape[1] * scale
        if px:
            bar = _scale_bar_um(panels[0].shape[1] * px)
            length = int(bar / px * scale)
            draw.rectangle([w - length - 10, h - 16, w - 10, h - 11], fill=(255, 255, 255))
            draw.text((w - length - 10, h - 30), f"{bar:g} um", fill=(255, 255, 255))
        stamp = f"t = {t * dt:.1f} s" if dt else f"frame {t}"
        draw.text((8, 6), stamp, fill=(255, 255, 255))
        if raw is not None:
            draw.text((8, h - 20), "confocal", fill=(255, 255, 255))
            draw.text((w + 4 * scale + 8, h - 20), "TCAN", fill=(255, 255, 255))
        frames.append(np.asarray(pil))
    return frames


def write_movie(path: Path, raw: np.ndarray | None, enhanced: np.ndarray, px: float | None,
                dt: float | None, *, fmt: str = "mp4", fps: float = 10.0) -> None:
    frames = render_frames(raw, enhanced, px, dt)
    if fmt == "gif":
        from PIL import Image

        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(path, format="GIF", save_all=True, append_images=imgs[1:],
                     duration=int(1000 / fps), loop=0)
    elif fmt == "mp4":
        import imageio.v2 as imageio

        even = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]
        writer: Any = imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264",
                                         quality=8, macro_block_size=1)
        with writer as w:
            for f in even:
                w.append_data(f)
    else:
        raise ConfigError(f"movie format must be mp4 or gif, got {fmt!r}")
