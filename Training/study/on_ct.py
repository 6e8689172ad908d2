"""A check beyond MR: each U-Net of the first seed on the CT patients held out of training, two ways.

Through synthetic MR, the method's route (EssNet's CT -> MR, then the U-Net under its MR card: what the Liver
Segmentation module's *Input is CT* and ``segment --from-ct`` give users), and directly, under a card with the CT
window that the ``real+ct`` arm's CT slices had in training. Scored against the CT liver labels, reported apart
from the MR validation scores, never used to pick a checkpoint. Each arm's scores are kept in its folder
(``scores_ct.json``), so a resumed run does not score them again; a route kept empty there (the arm was first
scored in a run without EssNet) is scored once EssNet's synthetic MR is there.
"""
from __future__ import annotations

from pathlib import Path

from ..data.cohorts import load_case
from ..stages.checkpoint import read_json, write_json
from .evaluate import as_loaded_model, score_segmentation

DIRECT, THROUGH_MR = "direct", "through_synthetic_mr"


def score_on_ct(networks: dict, folders: dict, ct_cases: list, synthetic_cases, mr_card, ct_card) -> dict:
    """``{arm: {"direct": scores, "through_synthetic_mr": scores or None}}`` (scores as ``score_segmentation``
    gives them). ``folders``: each arm's job folder; ``synthetic_cases``: the held-out CT patients translated by
    EssNet (None where no EssNet was trained)."""
    results, read = {}, {DIRECT: None, THROUGH_MR: None}

    def volumes(route: str, cases) -> dict:
        """The route's volumes by patient, read once for every arm still to be scored (one dict per route: a CT
        patient and its synthetic MR share the patient's name)."""
        if read[route] is None:
            read[route] = {case.patient: load_case(case) for case in cases}
        return read[route]

    for arm, network in networks.items():
        path = Path(folders[arm]) / "scores_ct.json"
        entry = {DIRECT: None, THROUGH_MR: None, **(read_json(path) or {})}
        scored = False
        if entry[DIRECT] is None:
            entry[DIRECT] = score_segmentation(as_loaded_model(network, ct_card), ct_cases,
                                               volumes(DIRECT, ct_cases))
            scored = True
        if synthetic_cases and entry[THROUGH_MR] is None:
            # The synthetic MR of an early GAN can fail the modality check; it is what the route gives.
            entry[THROUGH_MR] = score_segmentation(as_loaded_model(network, mr_card), synthetic_cases,
                                                   volumes(THROUGH_MR, synthetic_cases),
                                                   allow_modality_mismatch=True)
            scored = True
        if scored:
            write_json(entry, path)
        results[arm] = entry
    return results
