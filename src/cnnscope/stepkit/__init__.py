"""What every step shares: its config schema bases and registry (:mod:`.schema`), the Hydra runner and
the skeleton each step writes its artifact through (:mod:`.runner`), and composition outside a step
with the study's checks (:mod:`.compose`). Like :mod:`cnnscope.steps`, it imports Hydra; the library
never does.
"""
