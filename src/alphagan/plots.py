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


def distance_histograms(generated: np.ndarray, real: np.ndarray, real_label: str,
                        title: str = "Distance to the nearest training image") -> np.ndarray:
    """The memorisation check as a picture: two overlaid, normalised histograms.

    Generated images far to the left of the real reference are near copies of training
    images; a generator that draws new members of the set overlaps the real histogram.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    values = np.concatenate([generated, real])
    bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 31)
    axes.hist(real, bins=bins, density=True, alpha=0.55, label=f"{real_label} ({len(real)})", color="tab:blue")
    axes.hist(generated, bins=bins, density=True, alpha=0.55, label=f"generated ({len(generated)})", color="tab:orange")
    for data, colour in ((real, "tab:blue"), (generated, "tab:orange")):
        axes.axvline(float(np.median(data)), color=colour, linestyle="--", linewidth=1)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("L2 distance, standardised luminance (dashed: medians)")
    axes.set_ylabel("density")
    axes.legend(fontsize=8)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def side_by_side(grids: dict[str, np.ndarray], scale: int = 2):
    """Image grids next to each other, each under its label, upscaled with nearest
    neighbours (a PIL image: benchmarks save it as one PNG)."""
    from PIL import Image, ImageDraw

    pictures = [Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST) for grid in grids.values()]
    width, height = max(p.size[0] for p in pictures), max(p.size[1] for p in pictures)
    sheet = Image.new("RGB", (len(pictures) * (width + 16) - 16, height + 24), "white")
    for index, (label, picture) in enumerate(zip(grids, pictures)):
        sheet.paste(picture, (index * (width + 16), 24))
        ImageDraw.Draw(sheet).text((index * (width + 16) + 4, 6), label, fill="black")
    return sheet
