"""Edge TPU paths without the chip (plain python: numpy + metalite.runtime).

    python edgetpu_run.py TPU_BUNDLE PLAIN_BUNDLE TASK.npz

TPU_BUNDLE carries backbone_edgetpu.tflite; libedgetpu is simply not installed (nothing is faked).
Prints one JSON object with what each delegate setting did.
"""

import ctypes.util
import json
import sys
import warnings

import numpy as np

from metalite.runtime import DelegateError, EdgeTPUFallbackWarning, FewShotClassifier, MetaliteError


def attempt(bundle, delegate):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            clf = FewShotClassifier(bundle, num_threads=2, delegate=delegate)
        except Exception as e:
            return None, {
                "error_type": type(e).__name__,
                "message": str(e),
                "is_delegate_error": isinstance(e, DelegateError),
                "is_metalite_error": isinstance(e, MetaliteError),
                "warnings": [str(w.message) for w in caught],
            }
    return clf, {
        "device": clf.device,
        "warnings": [
            {
                "category": w.category.__name__,
                "message": str(w.message),
                "is_fallback": issubclass(w.category, EdgeTPUFallbackWarning),
            }
            for w in caught
        ],
    }


def main():
    tpu, plain, task_path = sys.argv[1:4]
    task = np.load(task_path)
    sx, sy, qx = (
        task["support_images"],
        [str(s) for s in task["support_labels"]],
        task["query_images"],
    )
    out = {"libedgetpu_found": ctypes.util.find_library("edgetpu")}
    for name, bundle in (("tpu", tpu), ("plain", plain)):
        for delegate in ("auto", "cpu", "edgetpu"):
            clf, info = attempt(bundle, delegate)
            if clf is not None:
                # the fallback classifier really works: adapt + predict on the CPU model
                with warnings.catch_warnings(record=True) as later:
                    warnings.simplefilter("always")
                    info["proba"] = clf.fit(sx, sy).predict_proba(qx).tolist()
                info["warnings_after_init"] = len(later)
            out[f"{name}-{delegate}"] = info
    print(json.dumps(out))


if __name__ == "__main__":
    main()
