"""The public ISIC file formats: file names, column names and vocabularies (data-formats.md).

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
