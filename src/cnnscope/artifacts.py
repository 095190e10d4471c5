"""The names of files inside stage artifacts that more than one module needs (the writer and its readers).

Kept apart from the code that writes them, and free of heavy imports, so that the workflow can name
them while it parses the DAG.
"""

MODEL_FILE = "model.pt"  # the trained model inside the train stage's artifact
