"""One small module per published method or experiment, wiring data, balancers, classifiers and evaluation."""

import os
from pathlib import Path

# Where the recipes' default datasets live: $CXRGAN_DATA, else ../shared/data next to the repository (a source
# checkout). Every recipe takes --data, so an installed package only needs the variable or the flag.
DATA_ROOT = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
KERMANY_64 = str(DATA_ROOT / "kermany_pneumonia" / "kermany_pneumonia_64.npz")
NIH_SUBSET_64 = str(DATA_ROOT / "nih_chestxray14_subset" / "nih_chestxray14_subset_64.npz")
NIH_PNEUMONIA = DATA_ROOT / "nih_pneumonia"


def default_external(data: str) -> tuple[str, ...]:
    """The external site of a Kermany-based recipe: adult NIH pneumonia vs no finding (same labels, another
    hospital) at the data's image size, when ``nih_pneumonia`` is present; otherwise none."""
    if "kermany" not in Path(data).stem:
        return ()
    from cxrgan.data.members import read_members
    from cxrgan.errors import CxrganError

    try:  # the images' header only: nothing is decompressed
        size = int(read_members(data)["images"].shape[1])
    except (CxrganError, KeyError, IndexError):
        return ()  # the recipe's own checks report an unreadable data file
    site = NIH_PNEUMONIA / f"nih_pneumonia_{size}.npz"
    return (str(site),) if site.is_file() else ()
