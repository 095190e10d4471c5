"""Thin Hydra entry points, one per pipeline step: ``python -m cnnscope.steps.<step> key=value ...``.

Each step's settings are its ``Config`` dataclass, registered with :mod:`cnnscope.stepkit.schema`;
:func:`~cnnscope.stepkit.runner.run_step` composes and validates them and hands the typed ``Config`` to
the step's ``body``, which calls the library and writes its artifact through
:class:`~cnnscope.stepkit.runner.Output`. Only this package and :mod:`cnnscope.stepkit` import Hydra.
"""
