"""edge/self_train.py: which unreviewed cells an adapted model is sure enough of to train on."""
import numpy as np

from scopelite.edge.self_train import confident


def test_confident_keeps_sure_cells_of_the_labelled_classes_highest_first_and_capped():
    labels = ["eosinophil", "lymphocyte", "neutrophil", "platelet"]
    probs = np.array([[0.95, 0.0, 0.05, 0.0],   # 0: eosinophil, sure
                      [0.0, 0.0, 0.02, 0.98],   # 1: platelet: not a class the lab labelled
                      [0.5, 0.0, 0.5, 0.0],     # 2: unsure
                      [0.99, 0.0, 0.01, 0.0],   # 3: eosinophil, surer
                      [0.91, 0.0, 0.09, 0.0],   # 4: eosinophil, least sure
                      [0.02, 0.0, 0.93, 0.05]])  # 5: neutrophil
    chosen = confident(probs, labels, ["eosinophil", "neutrophil"], n=1)
    assert chosen == {"eosinophil": [3, 0], "neutrophil": [5]}  # cap 2 x n, the highest scores first
    assert confident(probs, labels, ["eosinophil", "neutrophil"], n=5)["eosinophil"] == [3, 0, 4]
    assert confident(probs, labels, ["eosinophil", "neutrophil"], n=5, min_score=0.96)["eosinophil"] == [3]
    # only the labelled classes compete: with neutrophils alone every crop is a neutrophil by its own score
    assert confident(probs, labels, ["neutrophil"], n=5, min_score=0.0) == {"neutrophil": [5, 2, 4, 0, 1, 3]}
