"""Static pictures for `dvc plots` and the README: loss curves and samples through training.

DVC draws its interactive charts with vega from a CDN, so offline its page shows no
curves; these PNGs show the same numbers anywhere. Pure functions: rows or arrays in, an
RGB uint8 array out; the stage writes the files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The loss history in two panels: the two players, and the terms the encoder/decoder minimise.
LOSS_PANELS = (
    ("Adversarial game", ("loss_d", "loss_adv_g"), "linear"),
    ("Encoder/decoder terms (log scale)", ("loss_vae", "loss_feature", "loss_pixel", "loss_kl"), "log"),
)


def loss_curves(rows: Sequence[dict], title: str = "Training losses") -> np.ndarray:
    """``losses.csv`` rows (``step`` + ``loss_*`` columns) -> a two-panel line chart, one colour per series."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.6), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)  # no pyplot: no global state, no display needed
    figure.suptitle(title)
    steps = np.array([float(row["step"]) for row in rows])
    for index, (panel_title, names, scale) in enumerate(LOSS_PANELS):
        axes = figure.add_subplot(1, len(LOSS_PANELS), index + 1)
        for name in names:
            if rows and name in rows[0]:
                values = np.array([float(row[name]) for row in rows])
                if scale == "log":
                    values = np.where(values > 0, values, np.nan)  # log axes cannot show zero or below
                axes.plot(steps, values, label=name, linewidth=1.2)
        axes.set_yscale(scale)
        axes.set_title(panel_title, fontsize=10)
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def samples_through_training(snapshots: Sequence[tuple[int, np.ndarray]], keep: int = 8) -> np.ndarray:
    """Rows of the same fixed-latent faces at up to ``keep`` epochs (first and last always), labelled.

    ``snapshots`` holds ``(epoch, strip)`` pairs in order, each strip an HxWx3 uint8 row of
    faces of equal size.
    """
    from PIL import Image, ImageDraw

    if not snapshots:
        raise ValueError("no snapshots to draw")
    chosen = sorted({round(i) for i in np.linspace(0, len(snapshots) - 1, min(keep, len(snapshots)))})
    strips = [snapshots[i] for i in chosen]
    height, width = strips[0][1].shape[:2]
    label_width = 64
    canvas = Image.new("RGB", (label_width + width, height * len(strips)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (epoch, strip) in enumerate(strips):
        canvas.paste(Image.fromarray(np.ascontiguousarray(strip)), (label_width, row * height))
        draw.text((4, row * height + max(0, height // 2 - 6)), f"epoch {epoch}", fill="black")
    return np.asarray(canvas)
