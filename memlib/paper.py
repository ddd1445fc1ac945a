"""The paper's published numbers, typed from its tables, so every table we write shows them beside ours.

Accuracies in percent. Table 1 cells are (best, final, diff) per attack; Table A.1 rows are TRADES on
WRN-28-10 with (train natural, train robust, test natural, test robust, gap natural, gap robust).
"""

from __future__ import annotations

TABLE1_ATTACKS = ("natural", "pgd-10", "pgd-1000", "cw-1000", "autoattack")


def _row(*cells: float) -> dict:
    return {a: {"best": cells[3 * i], "final": cells[3 * i + 1], "diff": cells[3 * i + 2]}
            for i, a in enumerate(TABLE1_ATTACKS)}


# Table 1: ResNet-18, l-inf eps = 8/255; best checkpoint = highest PGD-10 test accuracy.
TABLE1 = {
    "cifar10": {
        "pgd_at": _row(83.75, 84.82, -1.07, 52.64, 44.92, 7.72, 51.22, 42.74, 8.48, 50.11, 43.63, 7.48, 47.74, 41.84, 5.90),
        "pgd_at_te": _row(82.35, 82.79, -0.44, 55.79, 54.83, 0.96, 54.65, 53.30, 1.35, 52.30, 51.73, 0.57, 50.59, 49.62, 0.97),
        "trades": _row(81.19, 82.48, -1.29, 53.32, 50.25, 3.07, 52.44, 48.67, 3.77, 49.88, 48.14, 1.74, 49.03, 46.80, 2.23),
        "trades_te": _row(83.86, 83.97, -0.11, 55.15, 54.42, 0.73, 53.74, 53.03, 0.71, 50.77, 50.63, 0.14, 49.77, 49.20, 0.57),
    },
    "cifar100": {
        "pgd_at": _row(57.54, 57.51, 0.03, 29.40, 21.75, 7.65, 28.54, 20.63, 7.91, 27.06, 21.17, 5.89, 24.72, 19.34, 5.38),
        "pgd_at_te": _row(56.45, 57.12, -0.67, 31.74, 30.24, 1.50, 31.27, 29.80, 1.47, 28.27, 27.36, 0.91, 26.30, 25.34, 0.96),
        "trades": _row(57.98, 56.32, 1.66, 29.93, 27.70, 2.23, 29.51, 26.93, 2.58, 25.46, 24.42, 1.04, 24.61, 23.40, 1.21),
        "trades_te": _row(59.35, 58.72, 0.63, 31.09, 30.12, 0.97, 30.54, 29.45, 1.09, 26.61, 25.94, 0.67, 25.27, 24.55, 0.72),
    },
    "svhn": {
        "pgd_at": _row(89.00, 90.55, -1.55, 54.51, 46.97, 7.54, 52.22, 42.85, 9.37, 48.66, 44.13, 4.53, 46.61, 38.24, 8.37),
        "pgd_at_te": _row(90.09, 90.91, -0.82, 59.74, 59.05, 0.69, 57.71, 56.46, 1.25, 54.55, 53.94, 0.61, 51.44, 50.61, 0.83),
        "trades": _row(90.88, 91.30, -0.42, 59.50, 57.04, 2.46, 52.78, 50.17, 2.61, 52.76, 50.53, 2.23, 40.36, 38.88, 1.48),
        "trades_te": _row(89.01, 88.52, 0.49, 59.81, 58.49, 1.32, 58.24, 56.66, 1.58, 54.00, 53.24, 0.76, 51.45, 50.16, 1.29),
    },
}

METHOD_NAMES = {"pgd_at": "PGD-AT", "pgd_at_te": "PGD-AT+TE", "trades": "TRADES", "trades_te": "TRADES+TE",
                "standard": "ST", "mix": "Eq. 6"}

# Table A.1: TRADES on true / random labels with explicit regularizers (augmentation, weight decay 2e-4,
# dropout 0.2). Key: (labels, augmentation, weight decay, dropout).
TABLE_A1_COLUMNS = ("train_nat", "train_rob", "test_nat", "test_rob", "gap_nat", "gap_rob")
TABLE_A1 = {
    ("true", False, False, False): (99.73, 99.65, 77.53, 37.47, 22.20, 62.18),
    ("true", True, False, False): (99.57, 97.03, 82.91, 45.37, 16.93, 51.66),
    ("true", False, True, False): (99.59, 99.53, 77.31, 38.94, 22.28, 60.59),
    ("true", False, False, True): (99.65, 99.40, 79.96, 39.86, 19.69, 59.54),
    ("true", True, True, False): (99.50, 97.28, 84.26, 49.16, 15.24, 48.12),
    ("true", False, True, True): (99.41, 99.20, 80.28, 41.64, 19.13, 57.56),
    ("random", False, False, False): (99.80, 99.55, 9.79, 0.15, 90.01, 99.40),
    ("random", True, False, False): (99.36, 86.10, 9.71, 0.24, 89.65, 85.86),
    ("random", False, True, False): (99.84, 99.53, 10.13, 0.23, 89.71, 99.30),
    ("random", False, False, True): (99.15, 92.23, 9.04, 0.17, 90.11, 92.06),
    ("random", True, True, False): (99.25, 69.62, 9.67, 0.24, 89.58, 69.38),
    ("random", False, True, True): (99.38, 81.57, 9.54, 0.19, 89.84, 81.38),
}

# Sec. 3.1 / Fig. 2(a,b): with WRN-28-10 both methods reach ~100% training accuracy on true labels; on
# random labels TRADES reaches ~100% and PGD-AT stays near chance (read off the figure, not a table).
FIG2_FINDING = "PGD-AT fails to converge on random labels; TRADES reaches ~100% natural and robust training accuracy"
