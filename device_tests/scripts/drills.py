"""Failure drills on the device (plain python: numpy + metalite.runtime). One JSON line per command.

python drills.py open BUNDLE                      # open a (possibly broken) bundle
python drills.py save BUNDLE TASK STATE [EXTRA]   # fit (+EXTRA more classes), save; report errors
python drills.py load BUNDLE TASK STATE           # load a state, predict the queries
python drills.py save-loop BUNDLE TASK STATE      # add a class and save, forever (to be killed)
"""

import json
import sys
import traceback

import numpy as np

from metalite.runtime import FewShotClassifier, MetaliteError


def error(e):
    return {
        "ok": False,
        "error_type": type(e).__name__,
        "message": str(e),
        "errno": getattr(e, "errno", None),
        "is_metalite_error": isinstance(e, MetaliteError),
        "is_oserror": isinstance(e, OSError),
        "traceback_depth": len(traceback.extract_tb(e.__traceback__)),
    }


def task(path):
    t = np.load(path)
    return t["support_images"], [str(s) for s in t["support_labels"]], t["query_images"]


def main():
    cmd, bundle = sys.argv[1], sys.argv[2]
    if cmd == "open":
        try:
            clf = FewShotClassifier(bundle, num_threads=1, delegate="cpu")
            out = {"ok": True, "device": clf.device}
        except Exception as e:
            out = error(e)
    elif cmd == "save":
        sx, sy, qx = task(sys.argv[3])
        extra = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        clf = FewShotClassifier(bundle, num_threads=1, delegate="cpu").fit(sx, sy)
        for i in range(
            extra
        ):  # more classes -> a bigger state file (support embeddings are stored)
            clf.add_class(f"extra{i:03d}", qx[i % len(qx) : i % len(qx) + 5])
        try:
            clf.save(sys.argv[4])
            out = {"ok": True, "classes": clf.classes, "proba": clf.predict_proba(qx).tolist()}
        except Exception as e:
            out = error(e)
    elif cmd == "load":
        sx, sy, qx = task(sys.argv[3])
        try:
            clf = FewShotClassifier.load(bundle, sys.argv[4], num_threads=1, delegate="cpu")
            out = {"ok": True, "classes": clf.classes, "proba": clf.predict_proba(qx).tolist()}
        except Exception as e:
            out = error(e)
    elif cmd == "save-loop":
        sx, sy, qx = task(sys.argv[3])
        clf = FewShotClassifier(bundle, num_threads=1, delegate="cpu").fit(sx, sy)
        i = 0
        while True:
            clf.add_class(f"extra{i:03d}", qx[i % len(qx) : i % len(qx) + 1])
            clf.save(sys.argv[4])
            print(f"saved {i}", flush=True)
            i += 1
    else:
        sys.exit(f"unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
