"""The names of files inside stage artifacts that more than one module needs (the writer and its readers).

Kept apart from the code that writes them, and free of heavy imports, so that the workflow can name
them while it parses the DAG.
"""

MODEL_FILE = "model.pt"  # the trained model inside the train stage's artifact
ACTIVATIONS = "activations.npy"  # extract: (N, C, H, W) activations, one row per probe image
UNIT_RANGE = "unit_range.npy"  # extract: (2, C) each unit's smallest and largest activation
THRESHOLDS = "thresholds.npy"  # dissect: (C,) each unit's activation threshold
UNITS = "units.csv"  # dissect: each unit's best concept and its IoU


def lcam_attention(variant: str) -> str:
    """lcam: the trained attention module of an L-CAM variant (``fm``, ``img``)."""
    return f"attention_{variant}.pt"
