"""The notebooks' one setup call: their parameters in, the variant's results, model, stimuli,
memories and random control out, each read the same way by every figure notebook.

A notebook's parameters cell names the variant, its data, its weights and the settings
profile; ``setup(...)`` keeps them, and everything that needs weights is loaded only when a
notebook asks for it, so a notebook answered from an existing store needs no weights at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Dict, Optional, Sequence

from ..base.errors import VitclsError
from ..model.registry import Variant, get_variant, variant_for_data
from .profiles import Profile, get_profile


@dataclass
class NotebookRun:
    """One notebook's variant, data, weights and profile (see :func:`setup`)."""

    variant: str
    dataset: str = "toy"
    data_dir: Optional[str] = None
    n_per_class: Optional[int] = None
    device: str = "auto"
    results_dir: str = "results"
    seed: int = 0
    weights: Optional[str] = None
    profile: Optional[str] = None

    @property
    def spec(self) -> Variant:
        return get_variant(self.variant)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def settings(self) -> Profile:
        """The profile's settings (catalogue §6: the authors' choices or the corrected ones)."""
        return get_profile(self.profile)

    @property
    def control_key(self) -> str:
        """The random-init control this variant is compared with under the profile."""
        return self.settings.control(self.variant)

    def _data(self, n_per_class: Optional[int] = None) -> dict:
        return dict(dataset=self.dataset, data_dir=self.data_dir,
                    n_per_class=self.n_per_class if n_per_class is None else n_per_class,
                    device=self.device, results_dir=self.results_dir, seed=self.seed)

    def store(self, **kwargs):
        """The variant's store (see :func:`vitcls_utils.stores.extraction.store_for`).

        Args:
            **kwargs: passed on to ``store_for`` (e.g. ``kinds``, ``key_topk``, ``perturbation``).
        Returns:
            The :class:`~vitcls_utils.stores.reader.Store`, read or extracted."""
        from ..stores.extraction import store_for

        return store_for(self.variant, weights=self.weights, **self._data(), **kwargs)

    def control_store(self, **kwargs):
        """The random control's store on the same stimuli.

        Args:
            **kwargs: passed on to ``store_for``, as for :meth:`store`.
        Returns:
            The control's :class:`~vitcls_utils.stores.reader.Store`."""
        from ..stores.extraction import store_for

        return store_for(self.control_key, **self._data(), **kwargs)

    def control_stores(self, seeds, **kwargs) -> dict:
        """The random control's stores at several initialisation seeds, on the same stimuli.

        Args:
            seeds: the random-init seeds (ints); the run's own ``seed`` is one of them or not.
            **kwargs: passed on to ``store_for``, as for :meth:`store`.
        Returns:
            {seed: the control's :class:`~vitcls_utils.stores.reader.Store` at that seed}."""
        from ..stores.extraction import store_for

        return {int(seed): store_for(self.control_key, **{**self._data(), "seed": int(seed)},
                                     **kwargs) for seed in seeds}

    def memory_store(self):
        """The store chapter 3 reads: every site kind and the top key indices.

        Returns:
            The variant's :class:`~vitcls_utils.stores.reader.Store`, with ``key_mlp`` and
            ``key_attn``."""
        from ..analysis.memories import KEY_TOPK, KINDS

        return self.store(kinds=KINDS, key_topk=KEY_TOPK)

    @cached_property
    def model(self):
        """The variant's model, loaded once (needs its weights)."""
        from ..model.loading import load_variant

        return load_variant(self.variant, weights=self.weights, device=self.device,
                            seed=self.seed)

    @cached_property
    def control_model(self):
        """The random-init control's model (no weights needed); a control's own is itself."""
        from ..model.loading import load_variant

        if self.control_key == self.variant and self.weights is None:
            return self.model
        return load_variant(self.control_key, device=self.device, seed=self.seed)

    def baseline_key(self, key: Optional[str] = None) -> str:
        """The CNN chapter 6 sets beside this ViT: ``key``, else the toy CNN on the toy and
        ResNet-50 (torchvision V1 weights) elsewhere; a random control gets the CNN's
        random-init control, so that random is compared with random."""
        key = key or ("toy_cnn" if self.dataset == "toy" else "resnet50_tv")
        if self.spec.random and not key.endswith("_random"):
            key += "_random"
        if get_variant(key).is_vit:
            raise VitclsError(f"baseline {key!r} is a ViT; chapter 6's baseline is a CNN "
                              "(`vitcls variants`: family cnn)")
        return key

    def baseline_model(self, key: Optional[str] = None):
        """The baseline CNN of :meth:`baseline_key`, loaded (random weights for a control)."""
        from ..model.loading import load_variant

        return load_variant(self.baseline_key(key), device=self.device, seed=self.seed)

    def models_beside(self, baselines: Optional[Sequence[str]] = None) -> Dict[str, object]:
        """{label: model} of this ViT and the CNNs set beside it (``baselines``, keys; None:
        the one of :meth:`baseline_key`), in that order.

        Args:
            baselines: CNN registry keys; None: the default CNN.
        Returns:
            A dict {label: loaded model}, this ViT first."""
        keys = [self.baseline_key(k) for k in (baselines or [None])]
        return {self.label: self.model,
                **{get_variant(k).label: self.baseline_model(k) for k in keys}}

    def partner_key(self) -> str:
        """The DeiT chapter 7 sets beside this ConViT (same size, recipe and data): toy_convit
        -> toy_deit, convit_<size> -> deit_<size>; a random control gets the DeiT's control.

        Returns:
            The DeiT's registry key, a str.
        Raises:
            VitclsError: when this variant is not a ConViT."""
        if self.spec.family != "convit":
            raise VitclsError(f"{self.variant} is not a ConViT: chapter 7 reads a ConViT, with "
                              "the DeiT of its size beside it (`vitcls variants`)")
        key = (self.spec.base or self.spec.key).replace("convit", "deit", 1)
        return get_variant(key).random_key if self.spec.random else key

    def partner_model(self, weights: Optional[str] = None):
        """The DeiT of :meth:`partner_key`, loaded (``weights``: its checkpoint file).

        Args:
            weights: the DeiT's checkpoint file; None: its published weights.
        Returns:
            The loaded DeiT (a timm model on the run's device)."""
        from ..model.loading import load_variant

        return load_variant(self.partner_key(), weights=weights, device=self.device,
                            seed=self.seed)

    def partner_store(self, weights: Optional[str] = None, **kwargs):
        """The DeiT's store on the same stimuli.

        Args:
            weights: the DeiT's checkpoint file; None: its published weights (or an existing store).
            **kwargs: passed on to ``store_for``, as for :meth:`store`.
        Returns:
            The DeiT's :class:`~vitcls_utils.stores.reader.Store`."""
        from ..stores.extraction import store_for

        return store_for(self.partner_key(), weights=weights, **self._data(), **kwargs)

    def memories(self):
        """The variant's value projections (from its weights).

        Returns:
            A :class:`~vitcls_utils.analysis.memories.Memories` (``projection[layer][b]``:
            [C, M])."""
        from ..analysis.memories import memories_for

        return memories_for(self.variant, seed=self.seed, weights=self.weights)

    def control_memories(self):
        """The random control's value projections.

        Returns:
            The control's :class:`~vitcls_utils.analysis.memories.Memories`."""
        from ..analysis.memories import memories_for

        return memories_for(self.control_key, seed=self.seed)

    def image(self, index: int, model=None):
        """Stimulus ``index`` preprocessed as the variant reads it: [1, 3, H, W] on the device
        of ``model`` (default: the variant's).

        Args:
            index: the stimulus's position in :meth:`stimuli`.
            model: a loaded model whose device is used; None: :attr:`model` (loads it).
        Returns:
            A float tensor [1, 3, H, W], normalised."""
        model = self.model if model is None else model
        return self.spec.preprocess(self.stimuli().load(index)[0])[None].to(
            next(model.parameters()).device)

    def stimuli(self, n_per_class: Optional[int] = None, split: Optional[str] = None):
        """The dataset, as the stores index it.

        Args:
            n_per_class: images per class; None: the run's ``n_per_class``.
            split: the dataset's split; None: its default.
        Returns:
            The labelled image dataset (``load(i)`` -> (PIL image, label))."""
        from ..datasets.kinds import build_dataset
        from ..stores.stimulus_cache import use

        return use(build_dataset(self.dataset, self.data_dir, num_classes=self.spec.classes,
                                 n_per_class=self.n_per_class if n_per_class is None
                                 else n_per_class, split=split), self.results_dir)

    def fewshot_pool(self, pool_dir: Optional[str] = None, per_class: int = 25):
        """The few-shot probe's training pool: ImageNet train images in ``pool_dir``
        (``<wnid>/<image>``, the first ``per_class`` of each class by file name), else the
        toy's training split (``per_class`` per class) or ImageNet-S ``test`` (10 per class)."""
        from ..datasets.kinds import build_dataset, probe_training_set

        classes = self.spec.classes
        if pool_dir:
            return build_dataset("folder", pool_dir, num_classes=classes, n_per_class=per_class)
        if self.dataset == "toy":
            return build_dataset("toy", None, num_classes=classes, n_per_class=per_class,
                                 split="train")
        return probe_training_set(self.dataset, self.data_dir, classes)

    def fewshot_features(self, shots, tokens=None, patch=None, pool_dir: Optional[str] = None,
                         pool_per_class: int = 25):
        """(pool features, test features, shots) for the few-shot probes: the pool of
        :meth:`fewshot_pool` and the stimuli in one pass each; prints what was used.

        Every shot count runs, as in big_vision's evaluator: a class with fewer images than k
        gives the k-shot set all it has, and the printed line says at which k that happens.

        Args:
            shots: k-shot counts to try (images per class).
            tokens: token choices among "cls", "mean", "patch"; None: all the model has.
            patch: the "patch" choice's index among the patches; None: the centre one.
            pool_dir: ImageNet train images (``<wnid>/<image>``); None: the dataset's pool.
            pool_per_class: images per class taken from ``pool_dir`` or the toy's train split.
        Returns:
            (pool :class:`~vitcls_utils.analysis.fewshot.Features`, test ``Features``, the shot
            counts that run, a list: :func:`~vitcls_utils.analysis.fewshot.usable_shots`).
        Raises:
            VitclsError: for a shot count below 1 or an empty pool."""
        from ..analysis import fewshot

        pool, test = self.fewshot_pool(pool_dir, pool_per_class), self.stimuli()
        train = fewshot.token_features(self.model, pool, tokens=tokens, patch=patch, desc="pool")
        tested = fewshot.token_features(self.model, test, tokens=tokens, patch=patch, desc="test")
        usable = fewshot.usable_shots(train.labels, self.spec.classes, shots)
        note = fewshot.shots_note(train.labels, self.spec.classes, usable)
        print(f"pool: {len(train.labels)} images ({pool.selection()}); test: "
              f"{len(tested.labels)} images; shots {usable}" + (f"; {note}" if note else ""))
        if not usable:
            raise VitclsError("the pool has no image: give pool_dir")
        return train, tested, usable

    def setting(self, name: str, value=None):
        """``value`` when the notebook sets it, else the profile's setting ``name``.

        Args:
            name: a :class:`~vitcls_utils.report.profiles.Profile` field, e.g. "n_random".
            value: the notebook's own value; None: the profile's.
        Returns:
            The setting's value."""
        from .profiles import setting

        chosen = setting(self.profile, name, value)
        if name == "n_random" and (not isinstance(chosen, int) or chosen < 1):
            raise VitclsError(f"n_random must be a positive number of random orders (or None "
                              f"for the profile's), not {chosen!r}")
        return chosen


def setup(variant: str, **parameters) -> NotebookRun:
    """The notebook's parameters -> a :class:`NotebookRun`; applies the plot theme. Unknown
    variants and profiles fail here, before any work.

    Args:
        variant: registry key (``vitcls variants``).
        **parameters: the other fields of :class:`NotebookRun` (``dataset``, ``data_dir``,
            ``n_per_class``, ``device``, ``results_dir``, ``seed``, ``weights``, ``profile``).
    Returns:
        The :class:`NotebookRun`.
    Raises:
        VitclsError: for an unknown variant or profile or a bad ``n_per_class`` or ``seed``."""
    from .style import set_theme

    for name, least in (("n_per_class", 1), ("seed", 0)):
        value = parameters.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < least):
            raise VitclsError(f"parameter {name} must be an integer of at least {least}, "
                              f"not {value!r}")
    run = NotebookRun(variant, **parameters)  # a random timm head takes the data's classes:
    run.variant = variant_for_data(run.variant, run.dataset, say=print).key
    _say_blocks(run.spec)
    get_profile(run.profile)
    set_theme()
    return run


def _say_blocks(spec: Variant) -> None:
    """One line on a page whose model is read on some of its blocks only (a Swin's last
    stage, :mod:`vitcls_utils.model.stages`): which blocks its block numbers are."""
    if spec.family != "timm":  # the registry's models are ViTs: every block is read
        return
    from ..model.stages import variant_blocks

    blocks = variant_blocks(spec)
    if blocks[0][0] != 1:
        print(f"{spec.key}: blocks {blocks[0][0]}-{blocks[-1][0]} (numbered across stages) are "
              f"{blocks[0][1]} to {blocks[-1][1]}, the last stage, the only one with the head's "
              "width: they alone are read in class space")
