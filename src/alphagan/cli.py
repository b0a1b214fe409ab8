"""``alphagan`` command line: draw, interpolate and reconstruct faces with a trained model.

    alphagan sample --count 64 --seed 1 --out faces.png
    alphagan interpolate --seed-a 1 --seed-b 2 --steps 8 --out strip.png
    alphagan reconstruct photos/ me.jpg --out grid.png

The model is ``models:/alpha-gan-generator@champion`` in the project's MLflow store
(``mlruns/mlflow.db`` of the working directory, or ``MLFLOW_TRACKING_URI``): the version
the evaluate stage judged best (:mod:`alphagan.champion`). ``--model`` picks another
(``models:/alpha-gan-generator/3``, ``runs:/<run id>/generator``), ``--checkpoint`` a
training checkpoint instead of the registry. Whatever is loaded is in eval mode with
gradients off (:func:`alphagan.tracking.load_model`).

Every bad argument or unusable file ends in one ``alphagan: error: ...`` line and a
non-zero exit status (2 for arguments, 1 for files and models), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from alphagan.errors import AlphaGanError

#: What ``--out`` may end in, and the Pillow format each is written as.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
#: Files a folder given to ``reconstruct`` contributes (others in it are skipped).
READABLE_SUFFIXES = (*IMAGE_FORMATS, ".gif")
MAX_COUNT = 4096
MAX_STEPS = 64
#: ``train.registered_model_name``'s default, at the alias evaluate maintains.
DEFAULT_MODEL = "models:/alpha-gan-generator@champion"
#: Faces per row of a reconstruct grid (each row of originals has its reconstructions below).
RECONSTRUCT_COLUMNS = 8


class CliError(AlphaGanError):
    """A bad argument or an unusable input/output file."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"alphagan: error: {message} (see alphagan {self.prog.split()[-1]} --help)\n")


def _whole(flag: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{flag} must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = flag  # argparse names the type in some messages
    return parse


_count = _whole("--count", 1, MAX_COUNT)
_seed = _whole("--seed", 0, 2**32 - 1)


def _out(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in IMAGE_FORMATS:
        raise argparse.ArgumentTypeError(f"--out {text!r} must end in an image extension ({', '.join(sorted(IMAGE_FORMATS))})")
    return path


def _uri(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.startswith(("models:/", "runs:/")) or text.rstrip("/") in ("models:", "runs:"):
            raise argparse.ArgumentTypeError(f"{flag} {text!r} must be an MLflow model URI such as {DEFAULT_MODEL} "
                                             "or models:/alpha-gan-generator/3 (for a file, use --checkpoint)")
        return text

    parse.__name__ = flag
    return parse


@dataclass
class Networks:
    """What a command draws with: the generator, maybe the encoder, and their sizes."""

    decoder: Any
    encoder: Callable[[Any], Any] | None  # images in [-1, 1] -> posterior mean
    latent_dim: int
    image_size: int | None
    source: str


def load_networks(model: str | None, checkpoint: Path | None, encoder: str | None = None,
                  need_encoder: bool = False) -> Networks:
    """The generator (and encoder) from a checkpoint file, else from the MLflow registry."""
    if checkpoint is not None:
        from alphagan.training import load_generator

        checkpoint = Path(checkpoint)
        if checkpoint.is_dir():
            raise CliError(f"--checkpoint {checkpoint} is a directory, not a checkpoint file")
        decoder, enc, config = load_generator(checkpoint)
        return Networks(decoder, lambda images: enc(images)[0], config.latent_dim, config.image_size, str(checkpoint))
    from alphagan import tracking

    model = model or DEFAULT_MODEL
    tracking.connect()
    decoder = tracking.load_model(model)
    latent_dim = tracking.exported_input_shape(decoder)[0]
    if not need_encoder:
        return Networks(decoder, None, latent_dim, None, model)
    encoder_uri = encoder or tracking.encoder_uri_for(model)
    moments = tracking.load_model(encoder_uri)  # EncoderMoments: (B, 2, latent_dim) = [mu, logvar]
    image_size = tracking.exported_input_shape(moments)[-1]
    return Networks(decoder, lambda images: moments(images)[:, 0], latent_dim, image_size, f"{model} + {encoder_uri}")


def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise CliError(f"--out {out} is a directory; give a file name such as {out / 'faces.png'}")
    return out


def _save(grid, out: Path) -> None:
    """Write a uint8 HxWx3 picture; the file appears complete or not at all."""
    from PIL import Image

    from alphagan import atomic

    picture = Image.fromarray(grid)
    atomic.save_with(out, lambda temporary: picture.save(temporary, format=IMAGE_FORMATS[out.suffix.lower()]))


def seeded_latents(seed: int, count: int, latent_dim: int):
    """``count`` latents from N(0, I) seeded by ``seed`` (row 0 is what ``--seed-a seed`` uses)."""
    import torch

    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))


def sample(checkpoint: Path | None, count: int, seed: int, out: Path, model: str | None = None) -> Path:
    """Write a grid of ``count`` faces drawn by the generator from N(0, I)."""
    import torch

    from alphagan.training import to_grid

    out = _check_out(out)
    networks = load_networks(model, checkpoint)
    with torch.no_grad():
        images = networks.decoder(seeded_latents(seed, count, networks.latent_dim))
    _save(to_grid(images), out)
    return out


def slerp(a, b, steps: int):
    """``steps`` points from ``a`` to ``b`` (both ends included) along the great circle,
    radii interpolated linearly (spherical linear interpolation, Shoemake 1985; for GAN
    latents, White 2016, "Sampling Generative Networks").

    Why not a straight line: two draws from N(0, I) in d dimensions have norms near
    sqrt(d) and are nearly orthogonal, so the midpoint of a straight line has norm
    ~sqrt(d/2), a radius the generator never saw in training (its faces there go bland).
    Slerp stays on the shell. Nearly parallel ends fall back to the straight line.
    """
    import torch

    t = torch.linspace(0, 1, steps).unsqueeze(1)  # (steps, 1)
    norm_a, norm_b = a.norm(), b.norm()
    cosine = torch.dot(a / norm_a, b / norm_b).clamp(-1, 1)
    omega = torch.arccos(cosine)
    if omega.sin().abs() < 1e-6:
        return (1 - t) * a + t * b
    direction = (torch.sin((1 - t) * omega) * (a / norm_a) + torch.sin(t * omega) * (b / norm_b)) / omega.sin()
    return direction * ((1 - t) * norm_a + t * norm_b)


def interpolate(seed_a: int, seed_b: int, steps: int, out: Path, model: str | None = None,
                checkpoint: Path | None = None) -> Path:
    """A strip of ``steps`` faces from the latent of ``seed_a`` to that of ``seed_b`` (slerp)."""
    import torch

    from alphagan.training import to_grid

    out = _check_out(out)
    networks = load_networks(model, checkpoint)
    a = seeded_latents(seed_a, 1, networks.latent_dim)[0]
    b = seeded_latents(seed_b, 1, networks.latent_dim)[0]
    with torch.no_grad():
        images = networks.decoder(slerp(a, b, steps))
    _save(to_grid(images, rows=steps), out)
    return out


def image_files(inputs: list[Path]) -> list[Path]:
    """Files named, plus the image files directly inside folders named (sorted; hidden
    files and other suffixes skipped)."""
    files: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in READABLE_SUFFIXES
                           and not p.name.startswith(".") and p.is_file())
            if not found:
                raise CliError(f"{path} holds no image files ({', '.join(READABLE_SUFFIXES)})")
            files += found
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise CliError(f"{path}: no such file or folder")
    if len(files) > MAX_COUNT:
        raise CliError(f"{len(files)} images given; at most {MAX_COUNT} at a time")
    return files


def reconstruct(inputs: list[Path], out: Path, model: str | None = None, checkpoint: Path | None = None,
                encoder: str | None = None) -> tuple[Path, int]:
    """Encode images to their posterior mean and decode them: a grid with each row of
    originals (prepared as the prepare stage does: centre crop, LANCZOS resize to the
    model's size, transparency onto white) above their reconstructions."""
    import numpy as np
    import torch

    from alphagan.imaging import ImageRejected, prepare_image
    from alphagan.training import to_grid, to_tensor

    out = _check_out(out)
    files = image_files(inputs)  # before loading: a typo fails fast
    networks = load_networks(model, checkpoint, encoder, need_encoder=True)
    size = networks.image_size
    arrays = []
    for path in files:
        try:
            arrays.append(prepare_image(path, size))
        except ImageRejected as exc:
            raise CliError(f"{path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a decoder error is a property of the file
            raise CliError(f"{path} cannot be decoded: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    originals = to_tensor(np.stack(arrays), torch.device("cpu"))
    with torch.no_grad():
        reconstructions = networks.decoder(networks.encoder(originals))
    columns = min(RECONSTRUCT_COLUMNS, len(files))
    rows = []
    for start in range(0, len(files), columns):
        chunk = [originals[start:start + columns], reconstructions[start:start + columns]]
        blank = columns - len(chunk[0])  # the last row may be short: white faces fill it
        rows += [torch.cat([part, torch.ones(blank, *part.shape[1:])]) for part in chunk]
    _save(to_grid(torch.cat(rows), rows=columns), out)
    return out, len(files)


def _model_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=_uri("--model"), default=None,
                        help=f"MLflow model URI of a generator (default {DEFAULT_MODEL})")
    source.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint instead (models/checkpoint.pt)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="alphagan", description="alpha-gan: a VAE-GAN that draws faces")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    draw = commands.add_parser("sample", help="draw a grid of new faces")
    _model_options(draw)
    draw.add_argument("--count", type=_count, default=64, help=f"faces to draw, 1..{MAX_COUNT}")
    draw.add_argument("--seed", type=_seed, default=0)
    draw.add_argument("--out", type=_out, default=Path("samples.png"), help="image file (.png, .jpg, .webp, ...)")

    strip = commands.add_parser("interpolate", help="a strip of faces between the latents of two seeds (slerp)")
    _model_options(strip)
    strip.add_argument("--seed-a", type=_whole("--seed-a", 0, 2**32 - 1), required=True,
                       help="first face: the same as the first face of `alphagan sample --seed A`")
    strip.add_argument("--seed-b", type=_whole("--seed-b", 0, 2**32 - 1), required=True)
    strip.add_argument("--steps", type=_whole("--steps", 2, MAX_STEPS), default=8, help=f"faces in the strip, 2..{MAX_STEPS}")
    strip.add_argument("--out", type=_out, default=Path("strip.png"), help="image file (.png, .jpg, .webp, ...)")

    again = commands.add_parser("reconstruct", help="encode and decode images: originals over reconstructions")
    again.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    _model_options(again)
    again.add_argument("--encoder", type=_uri("--encoder"), default=None,
                       help="MLflow URI of the encoder (default: the one registered by the generator's run)")
    again.add_argument("--out", type=_out, default=Path("reconstructions.png"), help="image file (.png, .jpg, .webp, ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "encoder", None) is not None and args.checkpoint is not None:
        parser.error("--encoder goes with --model; a checkpoint holds its own encoder")
    try:
        if args.command == "sample":
            path = sample(args.checkpoint, args.count, args.seed, args.out, model=args.model)
            done = f"wrote {args.count} faces to {path}"
        elif args.command == "interpolate":
            path = interpolate(args.seed_a, args.seed_b, args.steps, args.out, model=args.model, checkpoint=args.checkpoint)
            done = f"wrote {args.steps} faces from seed {args.seed_a} to seed {args.seed_b} to {path}"
        else:
            path, count = reconstruct(args.images, args.out, model=args.model, checkpoint=args.checkpoint, encoder=args.encoder)
            done = f"wrote {count} faces and their reconstructions to {path}"
    except AlphaGanError as exc:
        print(f"alphagan: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # anything the file system refuses that the checks above did not foresee
        from alphagan.atomic import describe_os_error

        print(f"alphagan: error: {describe_os_error(exc, exc.filename or args.out)}", file=sys.stderr)
        return 1
    print(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
