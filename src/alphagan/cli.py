"""``alphagan`` command line: draw new faces from a trained checkpoint.

    alphagan sample --checkpoint models/checkpoint.pt --count 64 --seed 1 --out faces.png

Every bad argument or unusable file ends in one ``alphagan: error: ...`` line and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alphagan.errors import AlphaGanError

#: What ``--out`` may end in, and the Pillow format each is written as.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
MAX_COUNT = 4096


class CliError(AlphaGanError):
    """A bad argument or an unusable input/output file."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"alphagan: error: {message} (see alphagan {self.prog.split()[-1]} --help)\n")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--count must be a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"--count must be between 1 and {MAX_COUNT}, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be a whole number, got {text!r}") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"--seed must be between 0 and {2**32 - 1}, got {value}")
    return value


def _out(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in IMAGE_FORMATS:
        raise argparse.ArgumentTypeError(f"--out {text!r} must end in an image extension ({', '.join(sorted(IMAGE_FORMATS))})")
    return path


def sample(checkpoint: Path, count: int, seed: int, out: Path) -> Path:
    """Write a grid of ``count`` faces drawn by the EMA generator from N(0, I); the file appears complete or not at all."""
    import torch
    from PIL import Image

    from alphagan import atomic
    from alphagan.training import load_generator, to_grid

    checkpoint, out = Path(checkpoint), Path(out)
    if out.is_dir():
        raise CliError(f"--out {out} is a directory; give a file name such as {out / 'faces.png'}")
    if checkpoint.is_dir():
        raise CliError(f"--checkpoint {checkpoint} is a directory, not a checkpoint file")
    decoder, _, config = load_generator(checkpoint)
    latent = torch.randn(count, config.latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = decoder(latent)
    grid = Image.fromarray(to_grid(images))
    atomic.save_with(out, lambda temporary: grid.save(temporary, format=IMAGE_FORMATS[out.suffix.lower()]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="alphagan", description="alpha-gan: a VAE-GAN that draws faces")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    draw = commands.add_parser("sample", help="draw a grid of new faces from a checkpoint")
    draw.add_argument("--checkpoint", type=Path, default=Path("models/checkpoint.pt"))
    draw.add_argument("--count", type=_count, default=64, help=f"faces to draw, 1..{MAX_COUNT}")
    draw.add_argument("--seed", type=_seed, default=0)
    draw.add_argument("--out", type=_out, default=Path("samples.png"), help="image file (.png, .jpg, .webp, ...)")
    args = parser.parse_args(argv)
    try:
        path = sample(args.checkpoint, args.count, args.seed, args.out)
    except AlphaGanError as exc:
        print(f"alphagan: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # anything the file system refuses that the checks above did not foresee
        from alphagan.atomic import describe_os_error

        print(f"alphagan: error: {describe_os_error(exc, exc.filename or args.out)}", file=sys.stderr)
        return 1
    print(f"wrote {args.count} faces to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
