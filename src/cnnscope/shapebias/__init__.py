"""Texture-vs-shape cue conflict (Geirhos et al., ICLR 2019): classes, stimuli, decisions, analyses.

Raw per-trial decisions in the published CSV columns are the interchange format, so human observers,
published CNNs and cnnscope's own models are analysed by the same code.
"""
