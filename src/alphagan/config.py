"""Typed, frozen parameters loaded from ``params.yaml``.

Every stage reads its section through :func:`load_params`. The models are strict:
an unknown key, a wrong type or an out-of-range value raises :class:`ConfigError`
with one line per problem naming the key, the value and what is allowed, before
any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from alphagan.errors import AlphaGanError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS_PATH = Path("params.yaml")

#: Image sizes the model depth is defined for (powers of two, 4x4 at the bottleneck).
SUPPORTED_IMAGE_SIZES = (16, 32, 64, 128, 256)


class ConfigError(AlphaGanError, ValueError):
    """params.yaml (or an override) does not describe a valid configuration."""


class _Section(BaseModel):
    # strict: "64" is not silently an int, 1 is not silently True.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DicebearParams(_Section):
    count: int = Field(3000, ge=1, le=1_000_000)
    styles: tuple[str, ...] = Field(("adventurer", "lorelei", "notionists", "micah", "big-smile", "open-peeps"), min_length=1)

    @model_validator(mode="after")
    def _known_styles(self) -> DicebearParams:
        from alphagan.sources.dicebear import available_styles

        known = available_styles()
        unknown = [s for s in self.styles if s not in known]
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; allowed: {', '.join(sorted(known))}")
        return self


class KaggleParams(_Section):
    handle: str = Field("splcher/animefacedataset/versions/3", pattern=r"^[\w.-]+/[\w.-]+/versions/\d+$")


class FolderParams(_Section):
    path: str = ""


class DataParams(_Section):
    source: Literal["dicebear", "kaggle", "folder"] = "dicebear"
    image_size: Literal[16, 32, 64, 128, 256] = 32
    dicebear: DicebearParams = DicebearParams()
    kaggle: KaggleParams = KaggleParams()
    folder: FolderParams = FolderParams()

    @model_validator(mode="after")
    def _folder_needs_path(self) -> DataParams:
        if self.source == "folder" and not self.folder.path:
            raise ValueError("data.source is 'folder' but data.folder.path is empty; set it to a directory or archive")
        return self


class ValidateParams(_Section):
    min_side: int = Field(16, ge=1)
    max_side: int = Field(4096, ge=1)
    min_aspect: float = Field(0.5, gt=0)
    max_aspect: float = Field(2.0, gt=0)
    allowed_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
    allowed_modes: tuple[str, ...] = ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "I;16", "I;16B", "I;16L", "I", "YCbCr")
    # Below this per-pixel standard deviation (0-255 scale) an image is taken as blank.
    min_pixel_std: float = Field(2.0, ge=0)
    # Decompression-bomb guard: images whose header declares more pixels are refused unread.
    # Every reader uses it (validate, prepare); the folder source and validate also refuse
    # any file over max_bytes without reading it.
    max_pixels: int = Field(50_000_000, ge=1)
    max_bytes: int = Field(100_000_000, ge=1)
    max_reject_fraction: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _ranges(self) -> ValidateParams:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} > max_side {self.max_side}")
        if self.min_aspect > self.max_aspect:
            raise ValueError(f"min_aspect {self.min_aspect} > max_aspect {self.max_aspect}")
        return self


class PrepareParams(_Section):
    val_fraction: float = Field(0.1, ge=0, lt=1)
    # crop: centre square crop (faces fill the frame); pad: letterbox with `background`.
    fit: Literal["crop", "pad"] = "crop"
    background: tuple[int, int, int] = (255, 255, 255)
    resample: Literal["lanczos", "bicubic", "bilinear", "box"] = "lanczos"
    workers: int = Field(0, ge=0, le=256)  # 0 = one per core

    @model_validator(mode="after")
    def _background_range(self) -> PrepareParams:
        if any(not 0 <= c <= 255 for c in self.background):
            raise ValueError(f"background {list(self.background)} must be three integers in 0..255")
        return self


class TrainParams(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: int = Field(110, ge=1)
    # Training length in thousands of images shown (StyleGAN2-ADA's kimg); 0 = use epochs.
    # Epochs mean nothing across dataset sizes (110 epochs of 90 images is 110 steps).
    kimg: float = Field(0.0, ge=0)
    # The global batch: with nproc processes each trains on batch_size / nproc images a step.
    batch_size: int = Field(64, ge=1)
    # Data-parallel processes on this machine (one per GPU; gloo processes on CPU). Above 1 the
    # train stage starts them itself through torchrun's launcher; under torchrun (multi-node)
    # the world size comes from torchrun and this is not used.
    nproc: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0, le=1)
    lr_discriminator: float = Field(5e-4, gt=0, le=1)
    # Share of the run, at its end, over which both learning rates fall linearly towards zero
    # (0 = constant learning rates; the schedule follows the planned length, see training.lr_scale).
    lr_decay_fraction: float = Field(0.0, ge=0, le=1)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    latent_dim: int = Field(128, ge=1)
    base_channels: int = Field(32, ge=1)
    max_channels: int = Field(256, ge=1)
    # The decoder's (generator's) and the discriminator's base widths; 0 = base_channels (the
    # encoder's). Each network's capacity can then be changed without the others'.
    decoder_channels: int = Field(0, ge=0)
    discriminator_channels: int = Field(0, ge=0)
    upsample: Literal["transposed", "resize"] = "transposed"
    adversarial_loss: Literal["bce", "hinge"] = "bce"
    gradient_routing: Literal["larsen", "shared"] = "shared"
    # Share of each batch that is encoded and reconstructed; the prior half is always a whole batch.
    reconstruction_fraction: float = Field(1.0, gt=0, le=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    spectral_norm: bool = False
    kl_weight: float = Field(8.0, ge=0)
    kl_warmup_steps: int = Field(500, ge=0)
    feature_weight: float = Field(100.0, ge=0)
    feature_layer: int = Field(1, ge=1)
    # Discriminators: 1 full-resolution; each more adds one on the image pooled 2x further.
    discriminator_scales: int = Field(1, ge=1)
    pixel_weight: float = Field(1.0, ge=0)
    adversarial_weight: float = Field(0.2, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    diffaugment: tuple[Literal["color", "translation", "cutout"], ...] = ()
    log_every: int = Field(25, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    grid_size: int = Field(64, ge=1)
    resume: bool = False
    experiment_name: str = Field("alpha-gan", min_length=1)
    registered_model_name: str = Field("alpha-gan-generator", min_length=1)
    # Stop after this many optimiser steps in total (0 = run all epochs); for tests and smoke runs.
    max_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _batch_splits_over_processes(self) -> TrainParams:
        if self.batch_size % self.nproc:
            raise ValueError(f"batch_size {self.batch_size} is the global batch and must divide evenly over "
                             f"nproc {self.nproc} processes; use a multiple of {self.nproc}")
        return self


class EvaluateParams(_Section):
    num_samples: int = Field(1000, ge=2)
    batch_size: int = Field(100, ge=1)
    # What the samples are scored against: the held-out val split, or the training set
    # itself (the DiffAugment paper's convention for 100-shot sets); auto = val when it
    # holds enough images to mean something (alphagan.evaluation.MIN_RELIABLE_COUNT), else train.
    reference: Literal["auto", "val", "train"] = "auto"
    draws: int = Field(3, ge=1, le=100)  # seeded random draws per score; their spread is reported
    inception_weights: str = ""
    nearest_neighbours: int = Field(8, ge=1)


class PathsParams(_Section):
    """Where each stage writes; dvc.yaml templates its deps and outs from these."""

    raw: str = "data/raw"
    validated: str = "data/validated"
    prepared: str = "data/prepared"
    models: str = "models"
    reports: str = "reports"


class Params(_Section):
    seed: int = Field(0, ge=0, le=2**32 - 1)
    paths: PathsParams = PathsParams()
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    prepare: PrepareParams = PrepareParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @model_validator(mode="after")
    def _feature_layer_fits_depth(self) -> Params:
        depth = (self.data.image_size // 4).bit_length() - 1
        if self.train.feature_layer > depth:
            raise ValueError(f"train.feature_layer {self.train.feature_layer} exceeds the discriminator's "
                             f"{depth} blocks at data.image_size {self.data.image_size}; use 1..{depth}")
        if self.train.discriminator_scales > depth:
            raise ValueError(f"train.discriminator_scales {self.train.discriminator_scales} would pool data.image_size "
                             f"{self.data.image_size} below 8x8; use 1..{depth}")
        return self

    @property
    def validate_params(self) -> ValidateParams:
        return self.validate_

    def as_dict(self) -> dict[str, Any]:
        """The params as plain YAML-shaped data (section names as in params.yaml)."""
        return self.model_dump(mode="json", by_alias=True)


def _format_error(error: dict[str, Any]) -> str:
    key = ".".join("validate" if part == "validate_" else str(part) for part in error["loc"])
    allowed = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{key or '<root>'}: unknown key (value {error['input']!r}); remove it or check its spelling"
    if not key:  # a check across sections: its message names the keys itself
        return allowed
    value = error.get("input")
    shown = "<section>" if isinstance(value, dict) else repr(value)
    return f"{key or '<root>'} = {shown}: {allowed}"


def parse_params(raw: dict[str, Any] | None) -> Params:
    """Build :class:`Params` from YAML-shaped data, raising :class:`ConfigError` on any problem."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params must be a mapping, got {type(raw).__name__}")
    # YAML lists are the natural spelling of tuples; strict mode would refuse them otherwise.
    try:
        return Params.model_validate(_lists_to_tuples(raw))
    except ValidationError as exc:
        raise ConfigError("\n".join(_format_error(e) for e in exc.errors())) from None


def _lists_to_tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_paths(params: Params, root: str | Path) -> None:
    """Refuse paths that would let a stage write or delete outside the pipeline's own outputs.

    Every ``paths.*`` must resolve (symlinks followed, relative to the working directory,
    exactly as the stages use it) strictly inside ``root``, the outputs must not overlap,
    and with ``data.source: folder`` the source may neither be, contain nor sit inside an
    output. Checked when params load, before any stage writes or deletes anything.
    """
    root = Path(root).resolve()
    outputs = {f"paths.{name}": (value, Path(value).expanduser().resolve())
               for name, value in params.paths.model_dump().items()}
    problems = []
    for key, (value, resolved) in outputs.items():
        if not value.strip():
            problems.append(f"{key} is empty; name a directory inside the project root {root}")
        elif not _inside(resolved, root) or resolved == root:
            problems.append(f"{key} = {value!r} resolves to {resolved}, which is not inside the project root {root} "
                            f"(the directory of the params file); outputs must live below it")
    if problems:
        raise ConfigError("; ".join(problems))
    keys = list(outputs)
    for i, first in enumerate(keys):
        for second in keys[i + 1:]:
            a, b = outputs[first][1], outputs[second][1]
            if _inside(a, b) or _inside(b, a):
                raise ConfigError(f"{first} ({a}) and {second} ({b}) overlap; each stage output needs its own directory")
    if params.data.source == "folder":
        source = Path(params.data.folder.path).expanduser().resolve()
        for key, (_, output) in outputs.items():
            if source == output:
                relation = "is the same directory as"
            elif _inside(output, source):
                relation = "contains"
            elif _inside(source, output):
                relation = "sits inside"
            else:
                continue
            raise ConfigError(f"data.folder.path ({source}) {relation} the output {key} ({output}); a stage may replace "
                              f"its outputs, so your images must live elsewhere: move them or change {key}")


def load_params(path: str | Path = DEFAULT_PARAMS_PATH) -> Params:
    """Load and validate params.yaml; its directory is the project root all outputs must stay in."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    params = parse_params(raw)
    check_paths(params, path.absolute().parent.resolve())
    return params


def with_overrides(params: Params, assignments: list[str]) -> Params:
    """``params`` with ``section.key=value`` assignments applied (values parsed as YAML, as
    ``dvc exp run -S`` does), validated as strictly as params.yaml itself."""
    raw = params.as_dict()
    for assignment in assignments:
        dotted, equals, text = assignment.partition("=")
        *sections, key = dotted.strip().split(".")
        if not equals or not sections or not key:
            raise ConfigError(f"override {assignment!r}: write it as section.key=value, e.g. train.kl_weight=16")
        target = raw
        for name in sections:
            if not isinstance(target.get(name), dict):
                raise ConfigError(f"override {assignment!r}: {name!r} is not a section of params.yaml")
            target = target[name]
        if key not in target:
            raise ConfigError(f"override {assignment!r}: {dotted.strip()} is not a parameter; check its spelling")
        try:
            target[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {assignment!r}: the value is not valid YAML: {exc}") from None
    return parse_params(raw)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become comma-joined strings."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat
