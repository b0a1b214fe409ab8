"""alpha-gan: a reproducible VAE-GAN pipeline that learns to draw faces."""

__version__ = "0.2.0"
