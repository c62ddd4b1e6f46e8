"""The public ISIC file formats: file names, column names and vocabularies (docs/data-formats.md).

Both the reader (ingest.py) and the synthetic writer (synth.py) use these, so the generator
writes exactly what the reader expects of the real downloads.
"""

from __future__ import annotations

# ISIC 2020 (Kaggle): train.csv, test.csv, jpeg/{train,test}/<image_name>.jpg
COLUMNS_2020_TRAIN = [
    "image_name",
    "patient_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
    "diagnosis",
    "benign_malignant",
    "target",
]
COLUMNS_2020_TEST = COLUMNS_2020_TRAIN[:5]

# ISIC 2019 (challenge site): ground truth (one-hot), metadata, ISIC_2019_Training_Input/<image>.jpg
TRUTH_2019 = "ISIC_2019_Training_GroundTruth.csv"
META_2019 = "ISIC_2019_Training_Metadata.csv"
IMAGES_2019 = "ISIC_2019_Training_Input"
COLUMNS_2019_TRUTH = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
COLUMNS_2019_META = ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]

# Pre-resized copies: jpeg-melanoma-NxN/{train,test}.csv (+ tfrecord, width, height), and
# jpeg-isic2019-NxN/train.csv with the 2020 column names, 2019 codes in `diagnosis`.
COLUMNS_RESIZED_2020_TRAIN = COLUMNS_2020_TRAIN + ["tfrecord"]
COLUMNS_RESIZED_2019 = COLUMNS_2020_TRAIN[:6] + ["tfrecord"]

SITES_2020 = (
    "head/neck",
    "upper extremity",
    "lower extremity",
    "torso",
    "palms/soles",
    "oral/genital",
)
SITES_2019_TO_2020 = {
    "anterior torso": "torso",
    "posterior torso": "torso",
    "lateral torso": "torso",
    **{s: s for s in SITES_2020},
}

# ISIC 2024 (SLICE-3D, Kaggle): train-metadata.csv + train-image.hdf5 (one dataset per isic_id
# holding the JPEG's bytes) or train-image/image/<isic_id>.jpg; test-metadata.csv + test-image.hdf5.
META_2024 = {"train": "train-metadata.csv", "test": "test-metadata.csv"}
HDF5_2024 = {"train": "train-image.hdf5", "test": "test-image.hdf5"}
IMAGES_2024 = "train-image/image"
COLUMNS_2024_TEST = [
    "isic_id", "patient_id", "age_approx", "sex", "anatom_site_general", "clin_size_long_diam_mm",
    "image_type", "tbp_tile_type", "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C",
    "tbp_lv_Cext", "tbp_lv_H", "tbp_lv_Hext", "tbp_lv_L", "tbp_lv_Lext", "tbp_lv_areaMM2",
    "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean", "tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL",
    "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm", "tbp_lv_eccentricity", "tbp_lv_location",
    "tbp_lv_location_simple", "tbp_lv_minorAxisMM", "tbp_lv_nevi_confidence", "tbp_lv_norm_border",
    "tbp_lv_norm_color", "tbp_lv_perimeterMM", "tbp_lv_radial_color_std_max", "tbp_lv_stdL",
    "tbp_lv_stdLExt", "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z",
    "attribution", "copyright_license",
]  # fmt: skip
# In train only: the label and what describes the diagnosis or comes after it. As features they
# leak the label, so they can never become one (tabular/features.py refuses them).
TRAIN_ONLY_2024 = [
    "target", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
    "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence",
]  # fmt: skip
COLUMNS_2024_TRAIN = COLUMNS_2024_TEST + TRAIN_ONLY_2024
# Measurements (numbers); the rest of the shared columns are categories or identifiers.
NUMERIC_2024 = ["age_approx", "clin_size_long_diam_mm"] + [
    c
    for c in COLUMNS_2024_TEST
    if c.startswith("tbp_lv_") and c not in ("tbp_lv_location", "tbp_lv_location_simple")
]
CATEGORICAL_2024 = [
    "sex",
    "anatom_site_general",
    "tbp_tile_type",
    "tbp_lv_location",
    "tbp_lv_location_simple",
    "attribution",
]
# Identifiers: as features they would let a model memorise rows or patients, never learn a lesion.
IDENTIFIERS_2024 = ["isic_id", "patient_id"]
SITES_2024 = ("head/neck", "upper extremity", "lower extremity", "anterior torso", "posterior torso")
TILE_TYPES_2024 = ("3D: white", "3D: XP")

# The ISIC Archive as the official isic-cli downloads it (`isic image download OUT/`): OUT/metadata.csv
# (one row per image, the isic-metadata schema), OUT/<isic_id>.jpg, OUT/attribution.txt (who gave
# the images) and OUT/licenses/<licence>.txt. The diagnosis is a path down the ISIC hierarchy,
# diagnosis_1 (Benign, Indeterminate, Malignant) to diagnosis_5.
METADATA_ARCHIVE = "metadata.csv"
ATTRIBUTION_ARCHIVE = "attribution.txt"
LICENSES_ARCHIVE = "licenses"
DIAGNOSIS_LEVELS = [f"diagnosis_{k}" for k in range(1, 6)]
COLUMNS_ARCHIVE = ["isic_id", "attribution", "copyright_license", "diagnosis_1"]
# Read when present (isic-cli writes only the columns some image of the download has).
OPTIONAL_ARCHIVE = [
    *DIAGNOSIS_LEVELS[1:], "patient_id", "lesion_id", "image_type", "fitzpatrick_skin_type", "sex",
    "age_approx", "anatom_site_general",
]  # fmt: skip
# What the archive's table carries beyond checks.TABLE_COLUMNS.
EXTRAS_ARCHIVE = ["lesion_id", "image_type", "fitzpatrick_skin_type", "attribution", "copyright_license"]
DERMOSCOPIC = "dermoscopic"
