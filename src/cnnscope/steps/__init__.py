"""Thin Hydra entry points, one per pipeline step: ``python -m cnnscope.steps.<step> key=value ...``.

Each step composes its config from ``config/<step>.yaml`` (validated against the dataclass schema in
:mod:`cnnscope.steps.schema`), calls the library, and writes its artifact atomically with the fully
resolved config beside it. Only this package imports Hydra.
"""
