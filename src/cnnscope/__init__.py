"""cnnscope: a reproducible pipeline for studying what convolutional networks learn.

The library (everything under ``cnnscope`` except ``cnnscope.steps``) never imports Snakemake or
Hydra, so it can be used and tested on its own; ``cnnscope.steps`` holds the thin Hydra entry points
that the Snakemake rules run.
"""

__version__ = "0.1.0"
