"""Each image's estimated skin tone (ITA, inputs/skin_tone.py), for a data folder.

ISIC 2024 measures the skin around every lesion (tbp_lv_Lext, tbp_lv_Bext): its ITA is computed
from those. Elsewhere it is estimated from the pixels around the lesion, once per image: the
estimates are kept in DATA/skin_tone.csv (image_name, image_path, ita) and only images not yet
there (or moved) are read again. Either way it is an estimate of the skin's colour in the picture,
not a skin type a clinician recorded (an ISIC Archive download may carry that:
fitzpatrick_skin_type).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.folder import DataFolder
from melanoma.fileio import write_csv
from melanoma.inputs.skin_tone import file_ita, ita
from melanoma.progress import progress_bar

FROM_PIXELS = "estimated from the skin around the lesion in the image"
FROM_TBP = "from the TBP measurement of the surrounding skin (tbp_lv_Lext, tbp_lv_Bext)"


def _from_tbp(data: Path, table: pd.DataFrame) -> pd.Series:
    from melanoma.data.isic2024 import find_isic2024, metadata

    meta = metadata(find_isic2024(Path(data))).set_index("isic_id")
    rows = meta.reindex(table.image_name)
    return pd.Series(
        np.asarray(ita(rows.tbp_lv_Lext, rows.tbp_lv_Bext), float), index=table.image_name.to_numpy()
    )


def _from_pixels(data: Path, table: pd.DataFrame, progress: bool) -> pd.Series:
    path = DataFolder(data).skin_tone
    known = pd.read_csv(path, dtype={"image_name": str, "image_path": str}) if path.is_file() else None
    cached: dict[tuple[str, str], float] = {}
    if known is not None and {"image_name", "image_path", "ita"} <= set(known.columns):
        cached = dict(zip(zip(known.image_name, known.image_path, strict=True), known.ita, strict=True))
    keys = list(zip(table.image_name, table.image_path, strict=True))
    todo = [k for k in dict.fromkeys(keys) if k not in cached]
    if todo:
        with (
            progress_bar("skin tone: reading images", len(todo), progress) as advance,
            ThreadPoolExecutor(4) as pool,
        ):
            for key, value in zip(todo, pool.map(lambda k: file_ita(k[1]), todo, chunksize=32), strict=True):
                cached[key] = value
                advance()
        rows = pd.DataFrame(
            [(n, p, v) for (n, p), v in cached.items()], columns=["image_name", "image_path", "ita"]
        )
        write_csv(rows, path)
    return pd.Series([cached[k] for k in keys], index=table.image_name.to_numpy(), dtype=float)


def skin_tones(data: Path, table: pd.DataFrame, progress: bool = True) -> tuple[pd.Series, str]:
    """The ITA of every row of `table` (indexed by image_name) and how it was obtained."""
    if len(table) and (table.source == "isic2024").all():
        return _from_tbp(data, table), FROM_TBP
    return _from_pixels(data, table, progress), FROM_PIXELS
