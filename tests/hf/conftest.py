"""The Transformers tests never reach a hub: everything loads from the package's own directories."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
