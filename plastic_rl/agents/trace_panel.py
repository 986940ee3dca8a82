"""What the maze's side panel shows of a plastic agent: its trace, the plastic weights or the effective weights.

The Hebbian trace ``Hebb`` changes behaviour only through ``alpha ⊙ Hebb``, added to the fixed weights ``w``;
:class:`TracePanel` turns a policy's recurrent state into one of these three matrices, with the neurons in one
fixed order per model so that structure can form visibly from frame to frame.

The order is computed once per :class:`TracePanel` (one per model) by average-linkage hierarchical clustering,
correlation distance, with SciPy's optimal leaf ordering so that neighbouring neurons are similar:

* ``"activity"`` (the default, :func:`activity_order`): the neurons' activations over the first episode played
  with the panel. The trace accumulates products of activations, so neurons that fire together get similar rows
  of ``Hebb``, and the trace's growth shows as blocks rather than as scattered pixels;
* ``"parameters"`` (:func:`neuron_order`): each neuron's row and column of ``|alpha|`` (of ``|w|`` with one shared
  alpha), known before any episode;
* ``"none"``: the model's own order.

:func:`play_episode` plays an episode with the panel, fitting the activity order on its first episode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plastic_rl.core.options import check_choice

# --panel choice -> (title, label of the strip's value)
PANEL_CONTENTS: dict[str, tuple[str, str]] = {
    "trace": ("Hebbian trace Hebb", "|Hebb|"),
    "plastic": ("plastic weights alpha * Hebb", "|alpha*Hebb|"),
    "effective": ("effective weights w + alpha * Hebb", "|alpha*Hebb|"),
}
NEURON_ORDERS = ("activity", "parameters", "none")


def cluster_order(profiles: np.ndarray) -> np.ndarray:
    """A permutation of the rows of ``profiles`` ``(N, features)`` that puts similar rows (by correlation)
    next to each other: average-linkage clustering with optimal leaf ordering."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import pdist

    profiles = np.asarray(profiles, dtype=np.float64)
    # A constant row has no correlation distance; a tiny ramp keeps pdist finite without changing the order.
    profiles = profiles + 1e-12 * np.arange(profiles.shape[1])
    distances = np.nan_to_num(pdist(profiles, metric="correlation"), nan=1.0)
    return leaves_list(linkage(distances, method="average", optimal_ordering=True))


def neuron_order(weight: np.ndarray, plasticity_coefficient: np.ndarray | None) -> np.ndarray:
    """The ``"parameters"`` order: neurons clustered by their rows and columns of ``|alpha|`` (``(N, N)``), or of
    ``|w|`` when ``plasticity_coefficient`` is ``None`` or a single shared value."""
    per_connection = plasticity_coefficient is not None and np.ndim(plasticity_coefficient) == 2
    chosen = plasticity_coefficient if plasticity_coefficient is not None and per_connection else weight
    magnitude = np.abs(chosen)
    return cluster_order(np.concatenate([magnitude, magnitude.T], axis=1))


def activity_order(activations: np.ndarray) -> np.ndarray:
    """The ``"activity"`` order: neurons clustered by their activations ``(T, N)`` over an episode."""
    return cluster_order(np.asarray(activations).T)


class TracePanel:
    """Turns a :class:`~plastic_rl.agents.policies.PlasticRecurrentPolicy`'s state into the panel's matrix.

    Parameters
    ----------
    policy : a plastic policy (``plasticity`` ``"full"`` or ``"shared"``).
    content : ``"trace"`` (Hebb), ``"plastic"`` (alpha ⊙ Hebb) or ``"effective"`` (w + alpha ⊙ Hebb).
    order : ``"activity"`` (fitted by :meth:`fit_activity_order`, once; until then the model's order),
        ``"parameters"`` (:func:`neuron_order`, computed here) or ``"none"`` (the model's own order).
    """

    def __init__(self, policy: Any, content: str = "plastic", order: str = "activity") -> None:
        self.content = check_choice("content", content, PANEL_CONTENTS)
        check_choice("order", order, NEURON_ORDERS)
        if getattr(policy, "plasticity", "none") == "none":
            raise ValueError("the trace panel needs a plastic policy (plasticity 'full' or 'shared')")
        core = policy.core
        self.weight = core.weight.detach().cpu().numpy().astype(np.float64)
        alpha = core.plasticity_coefficient.detach().cpu().numpy().astype(np.float64)
        self.alpha = alpha if alpha.ndim == 2 else alpha.reshape(())
        self.order = np.arange(self.weight.shape[0])
        self.needs_activity = order == "activity"
        """Whether the order still waits for an episode's activations (:meth:`fit_activity_order`)."""
        if order == "parameters":
            self.order = neuron_order(self.weight, self.alpha if self.alpha.ndim == 2 else None)
        title, self.value_label = PANEL_CONTENTS[self.content]
        self.title = (
            title + {"activity": ", neurons by activity", "parameters": ", neurons by alpha", "none": ""}[order]
        )

    def fit_activity_order(self, activations: np.ndarray) -> None:
        """Fix the ``"activity"`` order from one episode's activations ``(T, N)`` (see :func:`activity_order`)."""
        self.order = activity_order(activations)
        self.needs_activity = False

    def matrix_and_value(self, state: tuple[np.ndarray, ...], env_index: int = 0) -> tuple[np.ndarray, float]:
        """The panel's matrix (rows and columns in :attr:`order`) and the strip's value: the Frobenius norm of
        its plastic part (Hebb for ``"trace"``, alpha ⊙ Hebb otherwise), for env ``env_index`` of ``state``
        (as returned by ``predict``)."""
        trace = np.asarray(state[1][env_index], dtype=np.float64)
        plastic = self.alpha * trace
        if self.content == "trace":
            matrix, changing = trace, trace
        elif self.content == "plastic":
            matrix, changing = plastic, plastic
        else:
            matrix, changing = self.weight + plastic, plastic
        return matrix[np.ix_(self.order, self.order)], float(np.linalg.norm(changing))


def play_episode(
    model: Any,
    env: Any,
    seed: int,
    deterministic: bool,
    panel: TracePanel | None = None,
    scales: tuple[float, float] | None = None,
) -> tuple[float, tuple[float, float]]:
    """One episode of ``model`` on ``env`` (seeded: env and torch), showing ``panel`` (a :class:`TracePanel`)
    in the env's side panel if given, with ``scales`` (colour scale, top of the strip; ``None``: fitted to each
    frame) fixed. A panel whose activity order is not fitted yet is fitted at the episode's end.

    Returns the reward and the scales that fit this episode: the largest over the episode of each matrix's 99th
    percentile of ``|value|`` (a few outliers then saturate rather than wash out the rest) and the largest
    strip value (each 1.0 when the episode had none).
    """
    scale, value_scale = scales if scales is not None else (None, None)
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(seed)  # torch's draws of the sampled actions, so that a replay takes the same actions
    draws_panel = panel is not None and getattr(env.unwrapped, "show_trace_panel", False)
    if panel is not None and draws_panel:
        initial = tuple(part.cpu().numpy() for part in model.policy.initial_state(1))
        matrix, value = panel.matrix_and_value(initial)
        env.unwrapped.set_panel_matrix(matrix, panel.title, scale, value, panel.value_label, value_scale)
    obs, _ = env.reset(seed=seed)
    state: tuple[np.ndarray, ...] | None
    state, episode_start, done, total_reward, largest, largest_value = None, True, False, 0.0, 0.0, 0.0
    activations = []
    while not done:
        action, state = model.predict(
            obs, state=state, episode_start=np.array([episode_start]), deterministic=deterministic
        )
        episode_start = False
        if panel is not None:
            matrix, value = panel.matrix_and_value(state)
            largest = max(largest, float(np.percentile(np.abs(matrix), 99)))
            largest_value = max(largest_value, value)
            activations.append(np.asarray(state[0][0], dtype=np.float64))
            if draws_panel:
                env.unwrapped.set_panel_matrix(matrix, panel.title, scale, value, panel.value_label, value_scale)
        obs, reward, terminated, truncated, _ = env.step(action)
        total_reward += float(reward)
        done = terminated or truncated
    if panel is not None and panel.needs_activity:
        panel.fit_activity_order(np.stack(activations))
    return total_reward, (largest or 1.0, largest_value or 1.0)
