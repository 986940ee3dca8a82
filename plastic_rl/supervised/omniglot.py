"""Omniglot one-shot classification (the paper's Experiment 3) for the supervised trainer."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from plastic_rl.core import PlasticLinear
from plastic_rl.core.embeddings import image_embedding
from plastic_rl.core.options import EMBEDDINGS, check_choice, check_positive_int
from plastic_rl.data.omniglot import IMAGE_SIZE, PARTS, SPLITS, OmniglotSplit, check_split, load_images, make_split
from plastic_rl.envs.omniglot import OmniglotClasses, check_episode_size, sample_omniglot_episodes
from plastic_rl.supervised.options import OMNIGLOT_HEADS, OmniglotOptions
from plastic_rl.supervised.task import Episodes, SupervisedTask, masked_mean

PIXELS = IMAGE_SIZE * IMAGE_SIZE


def split_digest(split: OmniglotSplit) -> str:
    """A short hash of a split's parts, kept with a model so that it is evaluated on the split it was trained with."""
    return hashlib.sha256(json.dumps(split.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


class OmniglotTask(SupervisedTask):
    """N-way K-shot Omniglot episodes from ``PlasticOmniglot-v0``'s sampler.

    An episode is ``ways * shots + queries`` steps; the input of a step is the 31x31 drawing, flattened,
    followed by its one-hot label (zeros at a query): ``(T, B, 961 + ways)``. Only the queries, the
    last ``queries`` steps, are scored. Loss: cross-entropy of the outputs (logits) there. Metrics:
    ``error_rate`` and ``accuracy``. The paper's protocol is one query (``queries=1``); more queries of
    the same shown drawings are more scored steps per episode for training and for the trainer's
    evaluations, while test scores (:func:`episode_hits`) always use one query per episode. Training
    episodes come from the split's training classes, the trainer's evaluations from its validation
    classes (from the training classes for a paper split with ``validation_characters=0``, the paper's
    1,523 training characters); test classes are only read by :func:`evaluate`.

    The split is rebuilt from its keywords (``split``, ``split_seed``, ``test_characters``,
    ``validation_characters``); ``digest``, which :meth:`config` records, makes a rebuilt task refuse
    to run on any other split (for instance if the data's character list changed).

    Models (all with the same embedding, see :class:`OmniglotClassifier`): ``"plastic"`` (the paper:
    a plastic output layer that the labels drive), ``"linear"`` (the same layer without plasticity:
    it cannot use the labels, so it stays at chance — the control that shows where the one-shot
    learning lives) and ``"prototypical"`` (Snell et al. 2017: the nearest class mean of the
    embeddings).
    """

    name = "omniglot"
    primary_metric = "error_rate"
    model_names = OMNIGLOT_HEADS

    def __init__(
        self,
        ways: int = 5,
        shots: int = 1,
        queries: int = 1,
        split: str = "vinyals",
        split_seed: int = 0,
        test_characters: int = 100,
        validation_characters: int = 100,
        data_dir: str | None = None,
        digest: str | None = None,
    ) -> None:
        check_positive_int("ways", ways)
        check_positive_int("shots", shots)
        check_positive_int("queries", queries)
        if ways < 2:
            raise ValueError(f"ways must be at least 2; got {ways}")
        check_split(split)
        if split not in SPLITS:  # a user's split file: kept by its full path, so that evaluation finds it again
            split = str(Path(split).resolve())
        self.ways, self.shots, self.queries = ways, shots, queries
        self.split_settings: dict[str, Any] = dict(
            split=split,
            split_seed=split_seed,
            test_characters=test_characters,
            validation_characters=validation_characters,
        )
        self.data_dir = None if data_dir is None else str(data_dir)
        self.digest = digest
        self._classes: dict[str, OmniglotClasses] = {}
        self._split: OmniglotSplit | None = None

    @property
    def split(self) -> OmniglotSplit:
        """The split, built (and checked against ``digest``) on first use; loads the images."""
        if self._split is None:
            self._load()
        assert self._split is not None, "set by _load"
        return self._split

    def _load(self) -> None:
        images = load_images(self.data_dir)
        settings = self.split_settings
        split = make_split(
            settings["split"],
            images,
            settings["split_seed"],
            settings["test_characters"],
            settings["validation_characters"],
        )
        digest = split_digest(split)
        if self.digest is not None and digest != self.digest:
            raise ValueError(
                f"the {settings['split']!r} split rebuilt from this data (digest {digest}) is not the one the model "
                f"was trained with (digest {self.digest}): the data's characters (or the split file) differ"
            )
        self.digest = digest
        self._split = split
        self._classes = {part: OmniglotClasses.of(images, split, part) for part in PARTS if split.parts[part]}
        for part, classes in self._classes.items():  # before any run starts, not at its first episode
            try:
                check_episode_size(classes, self.ways, self.shots, self.queries)
            except ValueError as error:
                raise ValueError(f"{error} (the {part} part of the {settings['split']!r} split)") from None

    def config(self) -> dict[str, Any]:
        if self.digest is None:
            self._load()
        return dict(
            ways=self.ways,
            shots=self.shots,
            queries=self.queries,
            **self.split_settings,
            data_dir=self.data_dir,
            digest=self.digest,
        )

    def like(self, ways: int | None = None, shots: int | None = None, queries: int | None = None) -> OmniglotTask:
        """The same split (checked by its digest) with other episodes: ``ways``-way ``shots``-shot, ``queries``."""
        settings = self.config()
        changes = dict(ways=ways, shots=shots, queries=queries)
        settings.update({name: value for name, value in changes.items() if value is not None})
        return OmniglotTask(**settings)

    def check_data(self) -> None:
        if self._split is None:
            self._load()  # reads the images and builds the split, checked against the model's digest

    def sample_part(self, part: str, batch_size: int, rng: np.random.Generator, queries: int | None = None) -> Episodes:
        """``batch_size`` episodes from the classes of ``part`` (``"train"``, ``"validation"`` or ``"test"``),
        with ``queries`` query steps each (default: the task's)."""
        check_choice("part", part, PARTS)
        if not self._classes:
            self._load()
        if part not in self._classes:
            raise ValueError(f"the {self.split_settings['split']!r} split has no {part} characters")
        queries = self.queries if queries is None else queries
        images, labels, targets = sample_omniglot_episodes(
            self._classes[part], self.ways, self.shots, rng, batch_size, queries
        )
        steps = images.shape[0]
        inputs = np.zeros((steps, batch_size, PIXELS + self.ways), dtype=np.float32)
        inputs[..., :PIXELS] = images.reshape(steps, batch_size, PIXELS)
        shown = labels >= 0
        inputs[..., PIXELS:][shown] = np.eye(self.ways, dtype=np.float32)[labels[shown]]
        one_hot = np.zeros((steps, batch_size, self.ways), dtype=np.float32)
        one_hot[-queries:] = np.eye(self.ways, dtype=np.float32)[targets]
        mask = torch.zeros(steps, batch_size, 1, dtype=torch.bool)
        mask[-queries:] = True
        return Episodes(torch.from_numpy(inputs), torch.from_numpy(one_hot), mask)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Episodes:
        return self.sample_part("train", batch_size, rng)

    def sample_validation(self, batch_size: int, rng: np.random.Generator) -> Episodes:
        """Validation episodes; the training classes' when the split holds none out (``validation_characters=0``)."""
        if not self._classes:
            self._load()
        return self.sample_part("validation" if "validation" in self._classes else "train", batch_size, rng)

    def test_scores(self, model: nn.Module, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
        if not isinstance(model, OmniglotClassifier):
            raise ValueError(f"model must be an OmniglotClassifier; got {type(model).__name__}")
        hits = episode_hits(model, self, episodes=episodes, seed=seed)
        return {"error_rate": 1.0 - hits, "accuracy": hits}

    def loss(self, outputs: Tensor, episodes: Episodes) -> Tensor:
        log_probabilities = torch.log_softmax(outputs.float(), dim=-1)
        return masked_mean(-(episodes.targets * log_probabilities).sum(-1, keepdim=True), episodes.mask)

    def metrics(self, outputs: Tensor, episodes: Episodes) -> dict[str, float]:
        correct = (outputs.argmax(-1) == episodes.targets.argmax(-1)).unsqueeze(-1).float()
        accuracy = masked_mean(correct, episodes.mask).item()
        return {
            "error_rate": 1.0 - accuracy,
            "accuracy": accuracy,
            "cross_entropy": self.loss(outputs, episodes).item(),
        }

    def build_model(  # type: ignore[override]  # the base's **options, spelled out
        self,
        model_name: str = "plastic",
        *,
        embedding: str = "paper",
        rule: str = "oja",
        fixed_weight: bool = True,
        hebbian_learning_rate: float = 1.0,
        alpha_init: float = 1.0,
        normalize_features: bool = False,
    ) -> nn.Module:
        check_choice("model_name", model_name, self.model_names)
        return OmniglotClassifier(
            self.ways,
            embedding=embedding,
            head=model_name,
            rule=rule,
            fixed_weight=fixed_weight,
            hebbian_learning_rate=hebbian_learning_rate,
            alpha_init=alpha_init,
            normalize_features=normalize_features,
        )

    @classmethod
    def from_options(cls, options: OmniglotOptions, data_dir: str | None = None) -> OmniglotTask:
        return cls(data_dir=data_dir, **asdict(options))


class OmniglotClassifier(nn.Module):
    """An embedding of each drawing followed by an episodic classifier head.

    ``(T, B, 961 + ways)`` inputs (the drawing, then the one-hot label) -> ``(T, B, ways)`` logits.

    Parameters
    ----------
    ways : classes per episode.
    embedding : ``"paper"`` (four 3x3 stride-2 convolutions of ``channels`` filters, tanh) or ``"conv4"``
        (Vinyals et al.'s: 3x3 convolutions, batch norm, ReLU, 2x2 max-pooling).
    head : ``"plastic"`` — a :class:`~plastic_rl.core.PlasticLinear` from the features to the logits
        whose trace is driven by the label on labelled steps (the paper); ``"linear"`` — the same
        layer without plasticity; ``"prototypical"`` — minus the squared distance to the mean
        embedding of each label's shown drawings.
    rule, hebbian_learning_rate : the plastic head's rule (Oja in the authors' code) and initial eta
        (1: with Oja's rule one labelled drawing then stores its features exactly in its label's column).
    alpha_init : the plastic head's alpha starts at ``alpha_init`` (+-10% noise). The plastic path must
        carry signal from the first episode: the untrained embedding's features are small and much
        alike, and at the core's default (alpha ~ 0.01, eta 0.01) the head learned nothing in 10,000
        training episodes (measured), while at 1 it is at 70% after 5,000.
    fixed_weight : the plastic head's fixed weight ``w``; ``False`` keeps it at zero (alpha * Hebb
        only, the authors' paper-era output layer).
    normalize_features : scale every drawing's features to unit length, so that the plastic head's
        ``Hebb . features`` is a cosine similarity: without it a shown drawing with large ReLU features
        outscores the others for every query (the head has no ``-|prototype|^2`` term, unlike the
        Prototypical Network's distance). ``alpha`` then sets the softmax's temperature.
    channels : filters per convolution (64), which is also the feature count.
    """

    def __init__(
        self,
        ways: int,
        *,
        embedding: str = "paper",
        head: str = "plastic",
        rule: str = "oja",
        fixed_weight: bool = True,
        hebbian_learning_rate: float = 1.0,
        alpha_init: float = 1.0,
        normalize_features: bool = False,
        channels: int = 64,
    ) -> None:
        super().__init__()
        check_positive_int("ways", ways)
        check_positive_int("channels", channels)
        check_choice("embedding", embedding, EMBEDDINGS)
        check_choice("head", head, OMNIGLOT_HEADS)
        self.config = dict(
            ways=ways,
            embedding=embedding,
            head=head,
            rule=rule,
            fixed_weight=fixed_weight,
            hebbian_learning_rate=hebbian_learning_rate,
            alpha_init=alpha_init,
            normalize_features=normalize_features,
            channels=channels,
        )
        self.ways, self.head = ways, head
        self.normalize_features = normalize_features
        self.embedding = image_embedding(embedding, channels)
        self.output: PlasticLinear | None = None
        if head != "prototypical":
            self.output = PlasticLinear(
                channels,
                ways,
                plasticity="full" if head == "plastic" else "none",
                rule=rule,
                hebbian_learning_rate=hebbian_learning_rate,
                bias=False,
            )
            with torch.no_grad():
                if self.output.plasticity_coefficient is not None:
                    self.output.plasticity_coefficient.normal_(alpha_init, 0.1 * abs(alpha_init))
            if not fixed_weight:
                with torch.no_grad():
                    self.output.weight.zero_()
                self.output.weight.requires_grad_(False)

    def check_ways(self, ways: int) -> None:
        """Refuse episodes of ``ways`` classes that the head cannot score: a plastic or linear head has one output
        unit per class it was trained with; the prototypical head has no per-class parameters."""
        if self.output is not None and ways > self.ways:
            raise ValueError(
                f"ways must be at most the {self.ways} classes a {self.head} head was trained with; got {ways}"
            )

    def features(self, inputs: Tensor) -> Tensor:
        """The embedding of every drawing: ``(T, B, channels)``."""
        steps, batch = inputs.shape[:2]
        images = inputs[..., :PIXELS].reshape(steps * batch, 1, IMAGE_SIZE, IMAGE_SIZE)
        features = self.embedding(images).reshape(steps, batch, -1)
        return nn.functional.normalize(features, dim=-1) if self.normalize_features else features

    def forward(self, inputs: Tensor) -> Tensor:
        # The prototypical head has no per-class parameters, so it takes episodes of any number of classes.
        ways = inputs.shape[-1] - PIXELS if self.output is None else self.ways
        if inputs.dim() != 3 or ways < 2 or inputs.shape[-1] != PIXELS + ways:
            raise ValueError(f"inputs must have shape (T, B, {PIXELS + self.ways}); got {tuple(inputs.shape)}")
        first = next(self.parameters())
        inputs = inputs.to(dtype=first.dtype, device=first.device)
        features, labels = self.features(inputs), inputs[..., PIXELS:]
        if self.output is None:
            return prototype_logits(features, labels)
        labelled = labels.ne(0).any(-1)  # (T, B)
        shown = int(labelled.all(1).cumprod(0).sum())  # the leading steps labelled in every episode
        if bool(labelled[shown:].any()):
            raise ValueError("the labelled steps of every episode must come first, before all its queries")
        # Queries read the trace that the labelled steps wrote and do not write it, so that every query of an
        # episode is classified from the same memory (with the paper's one query this is the plain unroll).
        if shown == 0:
            return self.output.read(features, self.output.initial_state(features.shape[1]))
        shown_logits, state = self.output(features[:shown], teacher=labels[:shown])
        return torch.cat([shown_logits, self.output.read(features[shown:], state)])


def prototype_logits(features: Tensor, labels: Tensor) -> Tensor:
    """Minus the squared distance of every step's features to each label's mean over the labelled steps."""
    counts = labels.sum(0).clamp_min(1.0)  # (B, ways)
    prototypes = torch.einsum("tbw,tbf->bwf", labels, features) / counts.unsqueeze(-1)
    return -(features.unsqueeze(2) - prototypes.unsqueeze(0)).square().sum(-1)


def nearest_neighbour_logits(features: Tensor, labels: Tensor) -> Tensor:
    """Minus the squared distance of every step's features to the nearest labelled drawing of each label."""
    distances = (features.unsqueeze(1) - features.unsqueeze(0)).square().sum(-1)  # (T, T_shown, B)
    shown = labels.unsqueeze(0) > 0  # (1, T_shown, B, ways)
    masked = torch.where(shown, distances.unsqueeze(-1), torch.full_like(distances.unsqueeze(-1), math.inf))
    return -masked.amin(1)


@torch.no_grad()
def episode_hits(
    model: OmniglotClassifier,
    task: OmniglotTask,
    *,
    part: str = "test",
    episodes: int = 1000,
    seed: int = 0,
    batch_size: int = 100,
    nearest_neighbour: bool = False,
) -> np.ndarray:
    """Whether the query of each of ``episodes`` fresh episodes of ``part`` was classified right, as 0/1 floats.

    The episodes depend on ``seed`` only, so every model sees the same ones. With ``nearest_neighbour``
    the model's head is replaced by the nearest labelled drawing in its feature space (baseline (c) of the
    issue). ``task`` may have other ways and shots than the model was trained with (:meth:`OmniglotTask.like`):
    a plastic or linear head trained on N-way episodes scores episodes of up to N classes on its first
    output units (the other label inputs stay zero), a prototypical head or the nearest neighbour any number.
    """
    check_positive_int("episodes", episodes)
    if not nearest_neighbour:  # the nearest neighbour reads the features only: any number of classes
        model.check_ways(task.ways)
    unused_label_units = max(model.ways - task.ways, 0) if model.output is not None else 0
    model.eval()
    device = next(model.parameters()).device
    rng = np.random.default_rng([seed, 2])
    correct: list[np.ndarray] = []
    remaining = episodes
    while remaining > 0:
        size = min(batch_size, remaining)
        batch = task.sample_part(part, size, rng, queries=1).to(device)
        if nearest_neighbour:
            outputs = nearest_neighbour_logits(model.features(batch.inputs), batch.inputs[..., PIXELS:])
        else:
            outputs = model(nn.functional.pad(batch.inputs, (0, unused_label_units)))[..., : task.ways]
        correct.append((outputs[-1].argmax(-1) == batch.targets[-1].argmax(-1)).cpu().numpy())
        remaining -= size
    return np.concatenate(correct).astype(np.float64)


def evaluate(model: OmniglotClassifier, task: OmniglotTask, **options: Any) -> dict[str, float]:
    """Accuracy of :func:`episode_hits` (same keywords) with its 95% confidence interval (normal approximation)."""
    hits = episode_hits(model, task, **options)
    accuracy = float(hits.mean())
    half_width = 1.96 * float(hits.std(ddof=1)) / math.sqrt(len(hits)) if len(hits) > 1 else math.nan
    return {"accuracy": accuracy, "ci95": half_width, "episodes": len(hits)}
