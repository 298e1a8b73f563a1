"""One small module per published method or experiment, wiring data, balancers, classifiers and evaluation."""

import os
from pathlib import Path

# Where the recipes' default datasets live: $CXRGAN_DATA, else ../shared/data next to the repository (a source
# checkout). Every recipe takes --data, so an installed package only needs the variable or the flag.
DATA_ROOT = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
KERMANY_64 = str(DATA_ROOT / "kermany_pneumonia" / "kermany_pneumonia_64.npz")
NIH_SUBSET_64 = str(DATA_ROOT / "nih_chestxray14_subset" / "nih_chestxray14_subset_64.npz")
