"""DVC stage entry points: ``python -m pipelines.<stage>``; each exposes ``main(argv)``."""
