"""Frames of the episodic memory envs (patterns, images, Omniglot): values drawn as grey cells, panels side by side.

The maze has its own renderer (:mod:`plastic_rl.envs.maze_rendering`); these envs show vectors and images, so one
way to draw a vector as a grid of cells serves all three, and their ``render()`` puts the current input beside,
once the network has answered, its output and the target.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

BACKGROUND = 96  # the grey between panels, darker than any cell's "0" grey so that panels stand apart
PANEL_GAP = 8


def grey_cells(values: np.ndarray, columns: int, cell: int, black: float, white: float) -> np.ndarray:
    """``values`` (flat) as an RGB uint8 grid of ``columns`` cells a row, ``cell`` x ``cell`` pixels each: ``black``
    maps to 0, ``white`` to 255, linearly between (clipped); a last row that is not full is padded with the grey
    halfway between."""
    values = np.asarray(values, dtype=np.float32).ravel()
    rows = -(-values.size // columns)
    grid = np.full(rows * columns, (black + white) / 2, dtype=np.float32)
    grid[: values.size] = values
    grey = np.clip(np.rint(255 * (grid - black) / (white - black)), 0, 255).astype(np.uint8)
    pixels = np.kron(grey.reshape(rows, columns), np.ones((cell, cell), dtype=np.uint8))
    return np.repeat(pixels[..., None], 3, axis=-1)


def side_by_side(panels: list[np.ndarray], gap: int = PANEL_GAP) -> np.ndarray:
    """The RGB ``panels`` left to right, top-aligned, ``gap`` pixels apart, on a dark grey background."""
    height = max(panel.shape[0] for panel in panels)
    width = sum(panel.shape[1] for panel in panels) + gap * (len(panels) - 1)
    frame = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    left = 0
    for panel in panels:
        frame[: panel.shape[0], left : left + panel.shape[1]] = panel
        left += panel.shape[1] + gap
    return frame


def answer_frame(
    current: np.ndarray,
    answer: np.ndarray | None,
    target: np.ndarray,
    columns: int,
    cell: int,
    black: float,
    white: float,
) -> np.ndarray:
    """The current input and, once the network has answered (``answer`` not ``None``), its answer and the target, as
    :func:`grey_cells` panels side by side."""
    panels = [current] if answer is None else [current, answer, target]
    return side_by_side([grey_cells(panel, columns, cell, black, white) for panel in panels])


def warn_no_render_mode() -> None:
    """Gymnasium's warning for ``render()`` on an env made without a render mode (``render()`` then returns None)."""
    gym.logger.warn(
        'Calling render without specifying any render mode; construct the env with render_mode="rgb_array".'
    )
