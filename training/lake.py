"""Lake et al.'s one-shot classification runs (Science 2015), on alphabets held out of training.

A run takes ``ways`` (20) characters of one alphabet. For each character one drawing is the support
(the single training example) and a drawing *by another person* is the query; the run's error is the
fraction of its ``ways`` queries given the wrong character. People err 4.5% on these runs. The two
drawers are drawn for each character (``pairing="character"``), or once for the whole run
(``pairing="run"``: one person drew every support image, another every query, as in Lake's 20 official
runs).

``lake_runs`` draws the runs from a ``FewShotData`` that carries drawer ids (Omniglot's ``CCCC_DD.png``);
``lake_error`` scores any ``classify(support_idx, labels, query_idx) -> predicted labels`` over them, so
the same runs grade a Keras model directory and a bundle through the device runtime.
"""

from __future__ import annotations

import numpy as np

from .datasets import LAKE_WAYS, DataError, FewShotData
from .evaluate import mean_ci95

DEFAULT_RUNS = 400


def lake_alphabets(data: FewShotData, ways: int = LAKE_WAYS) -> list:
    """Alphabets (groups) of ``data`` with at least ``ways`` characters drawn by two or more people."""
    names = {}
    for c in range(data.num_classes):
        if len(set(data.drawers[data.indices_of(c)]) - {-1}) >= 2:
            names.setdefault(data.groups[c], []).append(c)
    return sorted(g for g, cs in names.items() if len(cs) >= ways)


PAIRINGS = ("character", "run")


def lake_runs(
    data: FewShotData,
    runs: int = DEFAULT_RUNS,
    ways: int = LAKE_WAYS,
    seed: int = 0,
    pairing: str = "character",
) -> list:
    """``runs`` (alphabet, support_idx, query_idx) triples; alphabets taken in turn, characters at random,
    and two distinct drawers at random for each character or (``pairing="run"``) for the whole run, among
    the people who drew every character of the run. Raises DataError when no alphabet fits."""
    if pairing not in PAIRINGS:
        raise DataError(f"unknown drawer pairing {pairing!r}; choose one of {', '.join(PAIRINGS)}")
    alphabets = lake_alphabets(data, ways)
    if not alphabets:
        raise DataError(
            f"{data.spec or 'data'}: no alphabet has {ways} characters drawn by at least two "
            f"people (Lake runs need Omniglot-style CCCC_DD.png file names)"
        )
    rng = np.random.default_rng(seed)
    by_alphabet = {
        g: [c for c in range(data.num_classes) if data.groups[c] == g] for g in alphabets
    }
    out = []
    for r in range(runs):
        g = alphabets[r % len(alphabets)]
        chars = [by_alphabet[g][i] for i in rng.choice(len(by_alphabet[g]), ways, replace=False)]
        pair = _run_drawers(data, chars, rng) if pairing == "run" else None
        s_idx, q_idx = [], []
        for c in chars:
            idx = data.indices_of(c)
            drawers = data.drawers[idx]
            a, b = (
                pair
                if pair is not None
                else rng.choice(np.unique(drawers[drawers >= 0]), 2, replace=False)
            )
            s_idx.append(rng.choice(idx[drawers == a]))
            q_idx.append(rng.choice(idx[drawers == b]))
        out.append((g, np.array(s_idx), np.array(q_idx)))
    return out


def _run_drawers(data: FewShotData, chars: list, rng) -> tuple:
    """Two distinct drawer ids who both drew every character in ``chars``."""
    common = None
    for c in chars:
        d = set(int(x) for x in data.drawers[data.indices_of(c)]) - {-1}
        common = d if common is None else common & d
    if len(common) < 2:
        raise DataError(
            "pairing 'run' needs two people who drew every character of a run; "
            "this alphabet has fewer (use pairing 'character')"
        )
    a, b = rng.choice(sorted(common), 2, replace=False)
    return int(a), int(b)


def lake_error(classify, runs: list, progress=None) -> dict:
    """Mean error over ``runs`` with its 95% CI, overall and per alphabet (mean and CI over that alphabet's
    runs), and the spread over alphabets: their mean, standard deviation and the worst one.

    ``classify(support_idx, labels, query_idx)`` returns predicted labels (0..ways-1) of the queries.
    """
    errors, per = [], {}
    for g, s_idx, q_idx in runs:
        labels = np.arange(len(s_idx))
        pred = np.asarray(classify(s_idx, labels, q_idx))
        err = float((pred != labels).mean())
        errors.append(err)
        per.setdefault(g, []).append(err)
        if progress is not None:
            progress(1)
    mean, ci = mean_ci95(errors)
    by_alphabet = {g: round(float(np.mean(e)), 4) for g, e in sorted(per.items())}
    means = np.array(list(by_alphabet.values()))
    worst = max(by_alphabet, key=by_alphabet.get)
    return {
        "protocol": "lake",
        "error": mean,
        "ci95": ci,
        "runs": len(runs),
        "ways": len(runs[0][1]),
        "alphabets": by_alphabet,
        "alphabets_ci95": {g: round(mean_ci95(e)[1], 4) for g, e in sorted(per.items())},
        "alphabet_mean": float(means.mean()),
        "alphabet_sd": float(means.std(ddof=1)) if len(means) > 1 else 0.0,
        "worst_alphabet": worst,
        "worst_error": by_alphabet[worst],
    }


def embedding_classifier(
    emb: np.ndarray, spec, steps: int | None = None, transductive: bool = False
):
    """classify() for ``lake_error`` from precomputed embeddings of every image (a model directory's
    Keras backbone), adapting the head exactly as ``metalite.runtime.head`` does on the device."""
    from metalite.runtime.head import adapt, refine

    def classify(s_idx, labels, q_idx):
        head = adapt(spec, emb[s_idx], labels, len(labels), steps=steps)
        if transductive:
            head = refine(head, emb[s_idx], labels, emb[q_idx], float(spec.adaptation["scale"]))
        return head.logits(emb[q_idx]).argmax(1)

    return classify


def runtime_classifier(clf, images: np.ndarray, transductive: bool = False):
    """classify() for ``lake_error`` through the device runtime: ``clf.fit`` on the support drawings,
    ``clf.predict`` on the queries (``clf`` a ``FewShotClassifier``, ``images`` uint8 pixels, paper = 255)."""

    def classify(s_idx, labels, q_idx):
        clf.fit(images[s_idx], list(labels))
        return clf.predict(images[q_idx], transductive=transductive)

    return classify
