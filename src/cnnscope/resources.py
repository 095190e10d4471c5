"""Where the workflow and the Hydra config tree are, so a study can run from any folder.

In a checkout (an editable install) they are the repository's own ``Snakefile``, ``workflow/`` and
``config/``, beside ``src/``; a built wheel carries the same three, laid out the same way, as the
package data ``cnnscope/study/`` (``pyproject.toml`` maps that package to the repository's root).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_PACKAGE = Path(str(files("cnnscope")))
_CHECKOUT = _PACKAGE.parents[1]


def _root() -> Path:
    """The folder holding ``Snakefile``, ``workflow/`` and ``config/``: the checkout, else the package's."""
    if (_CHECKOUT / "src" / "cnnscope") == _PACKAGE and (_CHECKOUT / "Snakefile").is_file():
        return _CHECKOUT
    return _PACKAGE / "study"


ROOT = _root()
PACKAGES = _PACKAGE.parent  # the folder that holds the cnnscope package (a checkout's src/, or site-packages)
SNAKEFILE = ROOT / "Snakefile"
WORKFLOW = ROOT / "workflow"
PROFILES = WORKFLOW / "profiles"
CONFIG_DIR = ROOT / "config"
DEFAULT_STUDY = CONFIG_DIR / "config.yaml"
