"""``FewShotClassifier``: learn new classes on the device from a few images each.

The int8 backbone embeds images (cached by content); the meta-learned head is adapted to the support
embeddings with ``metalite.runtime.head.adapt`` (prototype init + the bundle's gradient steps). Every
method validates its input and computes the new state completely before replacing the old one, so an
error never leaves the classifier half-changed.

Labels are ``str`` or ``int`` (``metalite.runtime.labels``): ``bool`` is refused (``True`` would be the
same class as ``1``), numpy integers and strings become plain ``int``/``str``, anything else (float,
None, tuple, bytes) is an ``InputError`` at ``fit``/``add_class``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from . import head as headlib
from . import openset
from . import tta as ttalib
from .bundle import open_bundle
from .cache import EmbeddingCache
from .embedder import Embedder
from .errors import BundleError, InputError, NotFittedError, StateError, UnknownClassError
from .images import as_model_input, is_path
from .interpreter import get_backend, open_backbone
from .labels import normalize_label as _norm_label
from .labels import preview, short_repr
from .preprocess import to_pixels
from .state import State, load_state, save_state

_QUERY_BLOCK = (
    256  # images embedded / queries scored at a time: memory O(block), not O(n) or O(n * C)
)


def _group(rows: np.ndarray, lab: np.ndarray, classes: list) -> dict:
    """``{label: rows whose column index is its position}``, keeping row order (O(n log n), not O(n*C))."""
    order = np.argsort(lab, kind="stable")
    bounds = np.cumsum(np.bincount(lab, minlength=len(classes)))[:-1]
    return dict(zip(classes, np.split(rows[order], bounds)))


_IMAGE_INDEX = re.compile(r"^image (\d+)")


def _blocks(images):
    """``[(start, part)]`` of a batch longer than ``_QUERY_BLOCK`` (an array batch or a list), else None."""
    if isinstance(images, np.ndarray):
        batch = images.ndim == 4 or (
            images.ndim == 3 and images.shape[-1] > 4
        )  # as ``as_model_input`` reads it
        n = len(images) if batch else 0
    else:
        n = len(images) if isinstance(images, (list, tuple)) else 0
    if n <= _QUERY_BLOCK:
        return None
    return [(s, images[s : s + _QUERY_BLOCK]) for s in range(0, n, _QUERY_BLOCK)]


def _check_label(label):
    """A label to learn: ``normalize_label``, and never ``openset.UNKNOWN`` (predict's answer for "none of these")."""
    label = _norm_label(label)
    if label == openset.UNKNOWN:
        raise InputError(
            f"{label!r} cannot be a class label: it is what predict answers for images of no learned class"
        )
    return label


def _finite_rows(logits: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if len(bad):
        raise InputError(
            f"the adapted head gives non-finite scores for image {bad[0]}"
            f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}; its weights overflow on this input"
        )


class FewShotClassifier:
    """Few-shot classifier over a metalite bundle.

    Args:
      bundle_dir: bundle directory or .zip (str or Path).
      num_threads: CPU threads for the interpreter, or None for its default.
      delegate: ``"auto"`` (Edge TPU if the bundle has ``backbone_edgetpu.tflite`` and ``libedgetpu``
        loads, else CPU with one warning), ``"cpu"`` or ``"edgetpu"`` (error if not possible).
      batch_size: images per interpreter call for dynamic-batch models (default 32).
      cache_size: embeddings kept in the content-keyed LRU cache (default 4096; 0 disables it).
      tta: shifted copies averaged into every embedding (0, 4 or 8; ``metalite.runtime.tta``), or None for
        the bundle's setting (head.npz adaptation ``tta``, 0 when absent).
      unknown: open-set answers (``metalite.runtime.openset``): None (off: every image gets a class),
        ``"auto"`` or a target false-rejection rate in (0, 0.5]: ``predict`` answers ``openset.UNKNOWN``
        (``"<unknown>"``) for images too far from every class, with a threshold calibrated from the
        support set at every fit/add_class/remove_class. ``predict_proba`` is unchanged.

    Attributes:
      bundle: the verified ``Bundle``; head_spec: the bundle's ``HeadSpec``; device: ``"cpu"`` or
      ``"edgetpu"``; backend: interpreter package name; acceleration: how the backbone runs (interpreter,
      version, delegate and why: ``metalite.runtime.interpreter.Acceleration``; ``describe`` words it);
      embedder: the ``Embedder``; cache: the
      ``EmbeddingCache``; head: the ``AdaptedHead`` (None before ``fit``); unknown: the open-set setting
      (None, or ``{"rate", "threshold", "rule", "samples"}`` once fitted).

    Raises:
      BundleError, DelegateError, InterpreterNotFoundError.
    """

    def __init__(
        self,
        bundle_dir,
        num_threads: int | None = None,
        delegate: str = "auto",
        batch_size: int = 32,
        cache_size: int = 4096,
        tta: int | None = None,
        unknown=None,
    ):
        try:
            self._unknown_rate = openset.check_rate(unknown)
        except ValueError as e:
            raise InputError(str(e)) from None
        self.bundle = open_bundle(bundle_dir)
        try:
            self.head_spec = headlib.load_head(self.bundle.head_path)
            self.tta = ttalib.check_copies(
                self.head_spec.adaptation.get("tta", 0) if tta is None else tta
            )
        except ValueError as e:
            raise BundleError(
                f"{self.bundle.head_path.name}: {e} (bundle {self.bundle.source})"
            ) from None
        backend = get_backend()
        interp, self.device, self.acceleration = open_backbone(
            self.bundle, num_threads, delegate, backend
        )
        self.backend = backend.name
        name = (
            self.bundle.edgetpu_path if self.device == "edgetpu" else self.bundle.backbone_path
        ).name
        self.embedder = Embedder(interp, max_batch=batch_size, name=name)
        self._check_model(name)
        self.cache = EmbeddingCache(cache_size)
        self.head: headlib.AdaptedHead | None = None
        self._classes: list = []
        self._support: dict = {}  # label -> float32 (k, D)
        self._images: dict = {}  # label -> uint8 (k, H, W[, 3]) support pixels, or None if not known (old state)
        self.unknown: dict | None = None
        self._protos: np.ndarray | None = (
            None  # (C, d) head-output prototypes, kept while unknown is on
        )

    def _check_model(self, name: str) -> None:
        b, e = self.bundle, self.embedder
        if e.input_shape != b.input_shape:
            raise BundleError(
                f"{name}: input shape {list(e.input_shape)} does not match manifest.json {list(b.input_shape)}"
            )
        if e.embedding_dim != b.embedding_dim:
            raise BundleError(
                f"{name}: output size {e.embedding_dim} does not match manifest.json embedding_dim {b.embedding_dim}"
            )
        for which, mine, theirs in (
            ("input", e.input_quantization, b.input_quantization),
            ("output", e.output_quantization, b.output_quantization),
        ):
            if mine is not None and (
                not np.isclose(mine[0], theirs[0], rtol=1e-5, atol=0) or mine[1] != theirs[1]
            ):
                raise BundleError(
                    f"{name}: {which} quantization (scale {mine[0]:.6g}, zero_point {mine[1]}) does not "
                    f"match manifest.json (scale {theirs[0]:.6g}, zero_point {theirs[1]})"
                )
        layers = self.head_spec.weights
        if layers and layers[0][0].shape[0] != b.embedding_dim:
            raise BundleError(
                f"{b.head_path.name}: first layer takes {layers[0][0].shape[0]} inputs, "
                f"the backbone gives {b.embedding_dim}"
            )

    # ------------------------------------------------------------------ properties
    @property
    def classes(self) -> list:
        """Labels in column order of ``predict_proba`` (a copy)."""
        return list(self._classes)

    @property
    def embedding_dim(self) -> int:
        """Size of the backbone's embedding."""
        return self.bundle.embedding_dim

    # ------------------------------------------------------------------ embedding
    def _embed_input(self, x: np.ndarray) -> np.ndarray:
        out = self.cache.embed(x, self._embed_uncached)
        # a dequantized int8 output is always finite; a float backbone's is checked
        if self.embedder.output_quantization is None and not np.all(np.isfinite(out)):
            raise InputError("the backbone produced NaN or infinite embeddings")
        return out

    def _embed_uncached(self, x: np.ndarray) -> np.ndarray:
        if len(x) <= _QUERY_BLOCK:
            return ttalib.shift_average(self.embedder, x, self.tta)
        # in blocks: shift averaging holds 1 + tta copies of what it embeds (9 x 31 MB for 10,000 images)
        return np.concatenate(
            [
                ttalib.shift_average(self.embedder, x[s : s + _QUERY_BLOCK], self.tta)
                for s in range(0, len(x), _QUERY_BLOCK)
            ]
        )

    def embed(self, images) -> np.ndarray:
        """Embed images with the backbone (cached by image content).

        Args:
          images: a path, a list of paths/arrays, one image (H, W[, C]) or a batch (N, H, W[, C]).
        Returns:
          float32 (n, embedding_dim), dequantized.
        Raises:
          InputError: bad images.
        """
        blocks = _blocks(images)
        if blocks is None:
            return self._embed_input(
                as_model_input(images, self.bundle.input_shape, self.bundle.preprocess)
            )
        out = []  # block by block: converting and resizing all of a 10,000-image array first cost +1.2 GiB
        for start, block in blocks:
            try:
                x = as_model_input(block, self.bundle.input_shape, self.bundle.preprocess)
            except (
                InputError
            ) as e:  # name the image by its index in the whole input, not in the block
                raise InputError(
                    _IMAGE_INDEX.sub(
                        lambda m, start=start: f"image {int(m.group(1)) + start}", str(e), 1
                    )
                ) from None
            out.append(self._embed_input(x))
        return np.concatenate(out)

    def _pixels(self, x: np.ndarray) -> np.ndarray:
        """Model input -> the uint8 pixels kept with the support set (so another backbone can re-embed it)."""
        pre = self.bundle.preprocess
        return to_pixels(x, bool(pre.get("invert", True)), pre.get("range", (0.0, 1.0)))

    def _embed_keep(self, images) -> tuple:
        """(embeddings, kept pixels) of support images."""
        x = as_model_input(images, self.bundle.input_shape, self.bundle.preprocess)
        return self._embed_input(x), self._pixels(x)

    # ------------------------------------------------------------------ adaptation
    def _adapt(self, classes: list, support: dict) -> headlib.AdaptedHead:
        emb = np.concatenate([support[c] for c in classes]).astype(np.float32)
        y = np.concatenate([np.full(len(support[c]), i, np.int64) for i, c in enumerate(classes)])
        try:
            return headlib.adapt(self.head_spec, emb, y, len(classes))
        except ValueError as e:
            raise InputError(f"adaptation failed: {e}") from None

    def _hidden(self, head: headlib.AdaptedHead, emb: np.ndarray) -> np.ndarray:
        return headlib.hidden_forward(head.weights, head.activations, np.asarray(emb, np.float32))[
            -1
        ]

    def _open_set(self, head, classes: list, support: dict, setting: dict | None = None) -> tuple:
        """(setting, prototypes) for this head and support set: ``setting`` kept if given, else calibrated."""
        if head is None or self._unknown_rate is None:
            return None, None
        hidden = [self._hidden(head, support[c]) for c in classes]
        return setting or openset.calibrate(hidden, self._unknown_rate), openset.prototypes(hidden)

    def _commit(self, classes: list, support: dict, images: dict) -> FewShotClassifier:
        head = self._adapt(classes, support) if classes else None
        unknown, protos = self._open_set(head, classes, support)
        self._classes, self._support, self._images, self.head = classes, support, images, head
        self.unknown, self._protos = unknown, protos
        return self

    def set_unknown(self, unknown) -> FewShotClassifier:
        """Turn open-set answers on (``"auto"`` or a target rate, recalibrating from the support set) or off (None)."""
        try:
            rate = openset.check_rate(unknown)
        except ValueError as e:
            raise InputError(str(e)) from None
        self._unknown_rate = rate
        self.unknown, self._protos = self._open_set(self.head, self._classes, self._support)
        return self

    def fit(self, images, labels=None, seed=None) -> FewShotClassifier:
        """Learn these classes, replacing any learned before.

        Args:
          images: the support images (any form ``embed`` takes), one per label; or a mapping
            ``{label: images}`` with ``labels`` omitted.
          labels: sequence of labels (str or int; see the module docstring), same length as the images.
          seed: accepted for API stability; adaptation is deterministic.
        Returns:
          self. Columns are ordered by first appearance of each label.
        Raises:
          InputError: empty support set, a class without images, length mismatch, bad images, a label
            that is not a str or int.
        """
        del seed
        if isinstance(images, Mapping) and labels is None:
            if not images:
                raise InputError("empty support set: no classes given")
            classes, support, kept = [], {}, {}
            for label, imgs in images.items():
                label = _check_label(label)
                try:
                    support[label], kept[label] = self._embed_keep(imgs)
                except InputError as e:
                    raise InputError(f"class {short_repr(label)}: {e}") from None
                classes.append(label)
            return self._commit(classes, support, kept)
        if labels is None:
            raise InputError("fit needs labels (or a mapping {label: images})")
        if isinstance(labels, (str, bytes)):
            labels = [labels]
        labels = [
            _check_label(l)
            for l in (labels.tolist() if isinstance(labels, np.ndarray) else list(labels))
        ]
        if not labels:
            raise InputError("empty support set: no labels given")
        x = as_model_input(images, self.bundle.input_shape, self.bundle.preprocess)
        if len(x) != len(labels):
            raise InputError(f"got {len(x)} images but {len(labels)} labels")
        emb = self._embed_input(x)
        classes = list(dict.fromkeys(labels))
        index = {c: i for i, c in enumerate(classes)}
        lab = np.array([index[l] for l in labels])
        return self._commit(
            classes, _group(emb, lab, classes), _group(self._pixels(x), lab, classes)
        )

    def add_class(self, label, images) -> FewShotClassifier:
        """Learn one more class, keeping the others; refits the head on all stored support embeddings.

        If ``label`` is already known, ``images`` are added to its support set.

        Args:
          label: the new label (str or int).
          images: its support images (any form ``embed`` takes), at least one.
        Returns:
          self.
        Raises:
          InputError: no images or bad images, a label that is not a str or int.
        """
        label = _check_label(label)
        try:
            emb, pixels = self._embed_keep(images)
        except InputError as e:
            raise InputError(f"class {short_repr(label)}: {e}") from None
        support, kept = dict(self._support), dict(self._images)
        classes = list(self._classes)
        if label in support:
            support[label] = np.concatenate([support[label], emb])
            old = kept.get(label)
            kept[label] = None if old is None else np.concatenate([old, pixels])
        else:
            support[label], kept[label] = emb, pixels
            classes.append(label)
        return self._commit(classes, support, kept)

    def remove_class(self, label) -> FewShotClassifier:
        """Forget one class and refit the head on the others (no images needed).

        Returns:
          self (with no classes left, it is unfitted again).
        Raises:
          UnknownClassError: ``label`` is not a learned class. InputError: ``label`` is not a str or int.
        """
        label = _norm_label(label)
        if label not in self._support:
            raise UnknownClassError(
                f"unknown class {short_repr(label)}; known classes: {preview(self._classes)}"
            )
        support = {c: v for c, v in self._support.items() if c != label}
        kept = {c: v for c, v in self._images.items() if c != label}
        return self._commit([c for c in self._classes if c != label], support, kept)

    def rename_class(self, label, new_label) -> FewShotClassifier:
        """Give a learned class another label; its column, support set and the adapted head stay as they are.

        Raises:
          UnknownClassError: ``label`` is not a learned class. InputError: ``new_label`` is already a class,
            or a label is not a str or int.
        """
        label, new_label = _norm_label(label), _norm_label(new_label)
        if label not in self._support:
            raise UnknownClassError(
                f"unknown class {short_repr(label)}; known classes: {preview(self._classes)}"
            )
        if new_label == label:
            return self
        if new_label in self._support:
            raise InputError(
                f"class {short_repr(new_label)} exists already; add the images to it instead"
            )

        def renamed(d: dict) -> dict:
            return {new_label if c == label else c: v for c, v in d.items()}

        self._support, self._images = renamed(self._support), renamed(self._images)
        self._classes = [new_label if c == label else c for c in self._classes]
        return self

    # ------------------------------------------------------------------ prediction
    def _require_fit(self, what: str) -> headlib.AdaptedHead:
        if self.head is None:
            raise NotFittedError(
                f"{what} before fit: call fit(images, labels) or add_class(label, images) first"
            )
        return self.head

    def _head_for(self, what: str, emb: np.ndarray, transductive: bool) -> headlib.AdaptedHead:
        head = self._require_fit(what)
        if not transductive:
            return head
        sup = np.concatenate([self._support[c] for c in self._classes])
        lab = np.concatenate(
            [np.full(len(self._support[c]), i, np.int64) for i, c in enumerate(self._classes)]
        )
        return headlib.refine(head, sup, lab, emb, float(self.head_spec.adaptation["scale"]))

    def _logits(self, head: headlib.AdaptedHead, emb: np.ndarray) -> np.ndarray:
        """Scores (n, C), computed ``_QUERY_BLOCK`` queries at a time; InputError for non-finite ones."""
        logits = np.concatenate(
            [head.logits(emb[s : s + _QUERY_BLOCK]) for s in range(0, len(emb), _QUERY_BLOCK)]
        )
        _finite_rows(logits)
        return logits

    def predict_proba(self, images, transductive: bool = False) -> np.ndarray:
        """Class probabilities.

        Args:
          images: any form ``embed`` takes.
          transductive: refine the prototypes over this batch of images first (``head.refine``): more
            accurate on a batch of queries of the learned classes, but each answer depends on the batch.
        Returns:
          float32 (n, len(classes)), rows sum to 1, columns in ``classes`` order.
        Raises:
          NotFittedError, InputError (also for scores that overflow: never NaN probabilities).
        """
        self._require_fit("predict_proba")
        emb = self.embed(images)
        head = self._head_for("predict_proba", emb, transductive)
        return headlib.softmax(self._logits(head, emb)).astype(np.float32)

    def predict(self, images, transductive: bool = False) -> list:
        """Most probable label per image.

        Args:
          images: any form ``embed`` takes.
          transductive: as for ``predict_proba``.
        Returns:
          list of n labels; with ``unknown`` on, ``openset.UNKNOWN`` for the images it refuses.
        Raises:
          NotFittedError, InputError.
        """
        self._require_fit("predict")
        emb = self.embed(images)
        head = self._head_for("predict", emb, transductive)
        best = []
        for s in range(0, len(emb), _QUERY_BLOCK):  # argmax per block: memory O(block * C)
            logits = head.logits(emb[s : s + _QUERY_BLOCK])
            _finite_rows(logits)
            best.extend(np.argmax(logits, axis=1).tolist())
        labels = [self._classes[i] for i in best]
        refused = self._refused(emb)
        return [openset.UNKNOWN if r else l for l, r in zip(labels, refused)]

    def _refused(self, emb: np.ndarray) -> np.ndarray:
        """(n,) bool: embeddings farther from every prototype than the open-set threshold (all False when off)."""
        t = None if self.unknown is None else self.unknown["threshold"]
        if t is None:
            return np.zeros(len(emb), bool)
        return self.unknown_distance_of(emb) > t

    def unknown_distance_of(self, emb: np.ndarray) -> np.ndarray:
        """(n,) squared distance of embeddings to the nearest class prototype in head space (the open-set score)."""
        if self._protos is None:
            raise NotFittedError(
                "open-set scores need fit and unknown on (FewShotClassifier(..., unknown='auto'))"
            )
        return (
            np.concatenate(
                [
                    openset.nearest_distance(
                        self._hidden(self.head, emb[s : s + _QUERY_BLOCK]), self._protos
                    )
                    for s in range(0, len(emb), _QUERY_BLOCK)
                ]
            )
            if len(emb)
            else np.zeros(0, np.float32)
        )

    def is_unknown(self, images) -> np.ndarray:
        """(n,) bool: which images ``predict`` would answer ``openset.UNKNOWN`` for (all False with unknown off)."""
        self._require_fit("is_unknown")
        return self._refused(self.embed(images))

    def predict_proba_each(self, images, transductive: bool = False) -> list:
        """``predict_proba`` image by image: an unusable image does not fail the others.

        Args:
          images: a path or a list of paths/single images.
          transductive: as for ``predict_proba``, over the usable images.
        Returns:
          one entry per image: float32 (len(classes),) probabilities, or the ``InputError`` that image raised.
        Raises:
          NotFittedError.
        """
        self._require_fit("predict_proba_each")
        items = [images] if is_path(images) else list(images)
        out: list = [None] * len(items)
        good, xs = [], []
        for i, item in enumerate(items):
            try:
                xs.append(as_model_input([item], self.bundle.input_shape, self.bundle.preprocess))
                good.append(i)
            except InputError as e:
                out[i] = e
        if not good:
            return out
        try:
            emb = self._embed_input(np.concatenate(xs))
            head = self._head_for("predict_proba_each", emb, transductive)
        except (
            InputError
        ) as e:  # the whole batch (e.g. the backbone gave NaN): every usable image fails with it
            return [e if r is None else r for r in out]
        for s in range(0, len(good), _QUERY_BLOCK):
            logits = head.logits(emb[s : s + _QUERY_BLOCK])
            for i, row in zip(good[s : s + _QUERY_BLOCK], logits):
                if np.all(np.isfinite(row)):
                    out[i] = headlib.softmax(row[None])[0].astype(np.float32)
                else:
                    out[i] = InputError(
                        "the adapted head gives non-finite scores for this image; its weights overflow on it"
                    )
        return out

    # ------------------------------------------------------------------ persistence
    def support_embeddings(self) -> dict:
        """Return ``{label: float32 (k, D) support embeddings}`` (copies), in column order."""
        return {c: self._support[c].copy() for c in self._classes}

    def support_images(self) -> dict:
        """Return ``{label: uint8 support pixels}`` in column order: (k, H, W) gray, or (k, H, W, 3) for an RGB
        bundle; None for a class whose images are unknown (restored from a version-1 state). ``save`` keeps these."""
        return {
            c: None if self._images.get(c) is None else self._images[c].copy()
            for c in self._classes
        }

    def save(self, path) -> None:
        """Save the adapted state (labels, support embeddings and images, adapted head) to ``path`` atomically.

        Raises:
          NotFittedError: nothing learned yet. StateError: a label is not str/int. OSError.
        """
        head = self._require_fit("save")
        sup = np.concatenate([self._support[c] for c in self._classes])
        lab = np.concatenate(
            [np.full(len(self._support[c]), i, np.int64) for i, c in enumerate(self._classes)]
        )
        kept = [self._images.get(c) for c in self._classes]
        images = None if any(k is None for k in kept) else np.concatenate(kept)
        save_state(
            path,
            State(
                self.bundle.manifest_sha256,
                list(self._classes),
                sup,
                lab,
                head,
                dict(self.head_spec.adaptation, tta=self.tta),
                images,
                self.unknown,
            ),
        )

    @classmethod
    def load(
        cls, bundle_dir, path, num_threads: int | None = None, delegate: str = "auto", **kwargs
    ) -> FewShotClassifier:
        """Open ``bundle_dir`` and restore a state saved by ``save``.

        Args:
          bundle_dir: the bundle the state was adapted with.
          path: the state file.
          num_threads, delegate, **kwargs: as for the constructor.
        Returns:
          A fitted ``FewShotClassifier`` predicting exactly as the one that was saved.
        Raises:
          StateError: corrupt state or one made with another bundle; plus the constructor's errors.

        ``unknown`` omitted: the state's open-set setting and threshold as saved; given: that setting,
        recalibrated on the stored support set (None turns it off).
        """
        clf = cls(bundle_dir, num_threads=num_threads, delegate=delegate, **kwargs)
        st = load_state(path, clf.bundle.manifest_sha256, clf.embedding_dim)
        if kwargs.get("tta") is None:  # queries are embedded as the stored support embeddings were
            try:
                clf.tta = ttalib.check_copies(st.adaptation.get("tta", 0))
            except ValueError as e:
                raise StateError(f"{path}: {e}") from None
        spec = clf.head_spec
        if [w.shape for w, _ in st.head.weights] != [w.shape for w, _ in spec.weights] or list(
            st.head.activations
        ) != list(spec.activations):
            raise StateError(
                f"{path}: its head layers do not match the bundle's {clf.bundle.head_path.name}"
            )
        size = tuple(clf.bundle.input_shape[:2])
        if st.images is not None and tuple(st.images.shape[1:3]) != size:
            # kept images are at the bundle's input size; others could never be saved beside new ones
            raise StateError(
                f"{path}: its support images are {st.images.shape[1]}x{st.images.shape[2]}, "
                f"the bundle takes {size[0]}x{size[1]}"
            )
        classes = list(st.classes)
        support = _group(st.support, st.support_labels, classes)
        images = (
            dict.fromkeys(classes)
            if st.images is None
            else _group(st.images, st.support_labels, classes)
        )
        clf._classes, clf._support, clf._images, clf.head = classes, support, images, st.head
        keep = None
        if "unknown" not in kwargs and st.unknown is not None:
            clf._unknown_rate, keep = st.unknown["rate"], st.unknown
        clf.unknown, clf._protos = clf._open_set(st.head, classes, support, keep)
        if clf.unknown is not None and openset.UNKNOWN in classes:
            raise StateError(
                f"{path}: a class is named {openset.UNKNOWN!r}, the open-set answer; rename it to use unknown"
            )
        return clf

    def __repr__(self) -> str:
        return (
            f"FewShotClassifier(bundle={self.bundle.source!r}, device={self.device!r}, "
            f"backend={self.backend!r}, classes={len(self._classes)})"
        )
