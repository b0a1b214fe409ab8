"""``alphagan`` command line: draw new faces from a trained checkpoint.

    alphagan sample --checkpoint models/checkpoint.pt --count 64 --seed 1 --out faces.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alphagan.errors import AlphaGanError


def sample(checkpoint: Path, count: int, seed: int, out: Path) -> Path:
    """Write a grid of ``count`` faces drawn by the EMA generator from N(0, I)."""
    import torch
    from PIL import Image

    from alphagan.training import load_generator, to_grid

    decoder, _, config = load_generator(checkpoint)
    latent = torch.randn(count, config.latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = decoder(latent)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_grid(images)).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alphagan", description="alpha-gan: a VAE-GAN that draws faces")
    commands = parser.add_subparsers(dest="command", required=True)
    draw = commands.add_parser("sample", help="draw a grid of new faces from a checkpoint")
    draw.add_argument("--checkpoint", type=Path, default=Path("models/checkpoint.pt"))
    draw.add_argument("--count", type=int, default=64)
    draw.add_argument("--seed", type=int, default=0)
    draw.add_argument("--out", type=Path, default=Path("samples.png"))
    args = parser.parse_args(argv)
    try:
        path = sample(args.checkpoint, args.count, args.seed, args.out)
    except AlphaGanError as exc:
        print(f"alphagan: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.count} faces to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
