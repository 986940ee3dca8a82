"""SB3 features extractors for the recurrent policies: what turns an observation into the core's input."""

from __future__ import annotations

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN

from plastic_rl.core.embeddings import image_embedding


class ImageKeyExtractor(BaseFeaturesExtractor):
    """A ``Dict`` observation with one grayscale image key (e.g. ``PlasticOmniglot-v0``'s 31x31 ``"image"``): the
    image through the suite's image embedding (:func:`plastic_rl.core.embeddings.image_embedding`, the supervised
    Omniglot classifier's), every other key flattened, all concatenated.

    By default the embedding's batch-norm layers stay in inference mode, with their running statistics at their
    initial values (a learned per-channel scale and shift): an A2C rollout computes the features in inference mode,
    and a plastic core's update differentiates what the rollout recorded, which the update's features must equal.
    ``batch_statistics=True`` trains them as the supervised classifier does instead: each update normalises with its
    batch's statistics and moves the running ones, which rollouts and ``predict`` read; the plastic recurrent core then
    re-runs its rollouts in the update instead of recording them.

    Parameters
    ----------
    observation_space : a ``Dict`` space whose ``image_key`` is a ``(H, W)`` or ``(1, H, W)`` Box.
    image_key : the key of the image.
    embedding : ``"conv4"`` or ``"paper"`` (see :func:`~plastic_rl.core.embeddings.image_embedding`).
    channels : the embedding's filters, and the size of its features for a 31x31 image.
    frozen : the embedding takes no gradient (e.g. one trained elsewhere and copied in: only the layers after it
        learn).
    batch_statistics : batch norm with each update's batch statistics (see above).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        image_key: str = "image",
        embedding: str = "conv4",
        channels: int = 64,
        frozen: bool = False,
        batch_statistics: bool = False,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict) or image_key not in observation_space.spaces:
            raise ValueError(
                f"observation_space must be a Dict space with an {image_key!r} key; got {observation_space}"
            )
        shape = observation_space[image_key].shape or ()
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] != 1):
            raise ValueError(f"the {image_key!r} key must be a (H, W) or (1, H, W) image; got shape {shape}")
        network = image_embedding(embedding, channels)
        with th.no_grad():
            image_features = network.eval()(th.zeros(1, 1, *shape[-2:])).shape[1]
        others = [key for key in observation_space.spaces if key != image_key]
        other_features = sum(spaces.flatdim(observation_space[key]) for key in others)
        super().__init__(observation_space, image_features + other_features)
        self.image_key, self.other_keys, self.image_shape = image_key, others, tuple(shape[-2:])
        if frozen and batch_statistics:
            raise ValueError("frozen and batch_statistics exclude each other: batch statistics move the running ones")
        self.embedding = network.requires_grad_(not frozen)
        self.batch_statistics = bool(batch_statistics)

    def train(self, mode: bool = True) -> ImageKeyExtractor:
        super().train(mode)
        self.embedding.train(mode and self.batch_statistics)  # see the class docstring
        return self

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        images = observations[self.image_key].reshape(-1, 1, *self.image_shape)
        parts = [self.embedding(images), *(observations[key].flatten(1) for key in self.other_keys)]
        return th.cat(parts, dim=1)


#: The features extractors a run's ``policy_kwargs`` may name (``features_extractor_class: ImageKeyExtractor`` in
#: ``-params`` or the YAML), and that a model file may name in plain data.
EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {
    extractor.__name__: extractor for extractor in (FlattenExtractor, CombinedExtractor, NatureCNN, ImageKeyExtractor)
}
