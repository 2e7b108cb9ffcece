"""Published figures shown beside the in-run results (data, not code).

TSB_AD_M_VUS_PR: the VUS-PR each of 23 methods published for the nine TSB-AD-M
files in ../shared/data/tsb-ad-m, keyed by the file's 3-digit id. Source: the
TSB-AD benchmark (Liu & Paparrizos, "The Elephant in the Room: Towards A Reliable
Time-Series Anomaly Detection Benchmark", NeurIPS 2024 Datasets and Benchmarks;
github.com/TheDatumOrg/TSB-AD, its per-file multivariate results), as copied into
../shared/data/tsb-ad-m/published_vus_pr.csv; rounded to 4 decimals. Those runs
fit the unsupervised methods on the whole file.

SKAB_LEADERBOARD: the outlier-detection leaderboard of the Skoltech Anomaly
Benchmark (github.com/waico/SKAB, README): F1, FAR %, MAR % (None: not published).
"""

from __future__ import annotations

# fmt: off
TSB_AD_M_METHODS = (
    "IForest", "LOF", "PCA", "HBOS", "OCSVM", "MCD", "KNN", "KMeansAD",
    "COPOD", "CBLOF", "EIF", "RobustPCA", "AutoEncoder", "CNN", "LSTMAD", "TranAD",
    "AnomalyTransformer", "OmniAnomaly", "USAD", "Donut", "TimesNet", "FITS", "OFA",
)
# One row per file, in the order of TSB_AD_M_METHODS.
_ROWS: dict[str, tuple[float, ...]] = {
    "001": (
        0.0809, 0.0796, 0.0192, 0.0770, 0.0755, 0.0589, 0.0375, 0.8909, 0.0768, 0.0244, 0.0576, 0.0049,
        0.0068, 0.1009, 0.0369, 0.0364, 0.0140, 0.0034, 0.0034, 0.1772, 0.0193, 0.0964, 0.2183,
    ),
    "006": (
        0.1097, 0.0783, 0.1134, 0.1124, 0.0647, 0.1626, 0.1150, 0.2891, 0.1203, 0.1395, 0.1124, 0.1615,
        0.1472, 0.1177, 0.1215, 0.0970, 0.0785, 0.0555, 0.0601, 0.4190, 0.1827, 0.1231, 0.1141,
    ),
    "007": (
        0.0583, 0.0676, 0.1585, 0.0965, 0.0501, 0.0911, 0.0597, 0.0612, 0.0790, 0.0826, 0.0763, 0.5869,
        0.0911, 0.7531, 0.6549, 0.5976, 0.3189, 0.8644, 0.8656, 0.4487, 0.6247, 0.5557, 0.2684,
    ),
    "008": (
        0.8747, 0.2375, 0.3375, 0.9298, 0.9102, 0.8643, 0.4677, 0.5071, 0.8831, 0.8471, 0.4331, 0.1260,
        0.9237, 0.9316, 0.1636, 0.2263, 0.1321, 0.0739, 0.0589, 0.4137, 0.1644, 0.3724, 0.1756,
    ),
    "009": (
        0.0260, 0.0252, 0.0322, 0.0228, 0.0241, 0.0187, 0.0223, 0.0169, 0.0199, 0.0176, 0.0182, 0.0418,
        0.0300, 0.0998, 0.0347, 0.0415, 0.0260, 0.0179, 0.0420, 0.0623, 0.0229, 0.0164, 0.1476,
    ),
    "146": (
        0.1531, 0.0559, 0.1284, 0.1187, 0.0321, 0.1917, 0.1200, 0.2573, 0.1000, 0.2159, 0.1008, 0.1392,
        0.2161, 0.2405, 0.1175, 0.0331, 0.0441, 0.0266, 0.0353, 0.3419, 0.0294, 0.0297, 0.0320,
    ),
    "148": (
        0.0253, 0.0154, 0.0253, 0.0253, 0.0264, 0.0147, 0.0252, 0.1035, 0.0253, 0.0119, 0.0253, 0.0253,
        0.0264, 0.2033, 0.6657, 0.0257, 0.0142, 0.0075, 0.0110, 0.0991, 0.1205, 0.0405, 0.0390,
    ),
    "150": (
        0.0500, 0.0752, 0.0590, 0.0513, 0.1802, 0.1745, 0.0793, 0.5408, 0.0502, 0.1835, 0.1798, 0.0330,
        0.1794, 0.0855, 0.0597, 0.0384, 0.0382, 0.0215, 0.0205, 0.1036, 0.0418, 0.0350, 0.0420,
    ),
    "151": (
        0.0291, 0.0321, 0.0360, 0.0258, 0.0650, 0.0659, 0.0614, 0.3301, 0.0235, 0.0644, 0.0308, 0.0543,
        0.0621, 0.0305, 0.0299, 0.0433, 0.0166, 0.0569, 0.0428, 0.0388, 0.0288, 0.0230, 0.0240,
    ),
}
# fmt: on
TSB_AD_M_VUS_PR: dict[str, dict[str, float]] = {
    file: dict(zip(TSB_AD_M_METHODS, row, strict=True)) for file, row in _ROWS.items()
}

SKAB_LEADERBOARD: dict[str, tuple[float, float | None, float | None]] = {
    "Conv-AE": (0.78, 13.55, 28.02),
    "MSET": (0.78, 39.73, 14.13),
    "T-squared+Q (PCA)": (0.76, 26.62, 24.92),
    "LSTM-AE": (0.74, 29.96, 25.92),
    "T-squared": (0.66, None, None),
    "LSTM-VAE": (0.56, None, None),
    "Vanilla LSTM": (0.54, None, None),
    "Vanilla AE": (0.39, None, None),
    "MSCRED": (0.36, None, None),
    "Isolation forest": (0.29, None, None),
}
