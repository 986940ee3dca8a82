"""Pygame drawing of :class:`~plastic_rl.envs.maze.PlasticMazeEnv`.

pygame is imported only when a :class:`MazeRenderer` is created, so importing this module (and the env) stays
cheap and works on machines without a display.

Besides the current squares, a frame shows what happened recently, so that the explore-then-exploit behaviour
shows in a video: a fading trail of the squares the agent was drawn on in the last :data:`TRAIL_LENGTH` frames,
and a ring flashing on the reward square for :data:`HIT_FLASH_FRAMES` frames after each hit. With the side panel,
a strip along the bottom plots a number given with each panel matrix (e.g. the trace's norm) against the step,
with a tick at each reward hit. The renderer keeps this history itself, from the frames it is asked to draw
(a new episode starts when the step count goes down), so the env's step stays free of drawing bookkeeping.
"""

from __future__ import annotations

import math
import os
from collections import deque

import numpy as np

CELL_SIZE = 40
STATUS_HEIGHT = 32
PANEL_TITLE_HEIGHT = 32
PANEL_LEGEND_HEIGHT = 32
PANEL_MARGIN = 12
# The strip along the bottom of a frame with a side panel: the panel's number over the episode, hits as ticks.
STRIP_HEIGHT = 72
TRAIL_LENGTH = 12
HIT_FLASH_FRAMES = 5

BACKGROUND_COLOUR = (200, 200, 192)
WALL_COLOUR = (46, 52, 64)
FREE_COLOUR = (238, 238, 228)
REWARD_COLOUR = (240, 178, 30)
REWARD_BORDER_COLOUR = (160, 110, 0)
AGENT_COLOUR = (40, 96, 196)
AGENT_BORDER_COLOUR = (255, 255, 255)
STATUS_BACKGROUND_COLOUR = (30, 34, 42)
TEXT_COLOUR = (240, 240, 240)
PANEL_BACKGROUND_COLOUR = (250, 250, 250)
PANEL_TEXT_COLOUR = (30, 34, 42)
HIT_COLOUR = (255, 140, 0)
STRIP_LINE_COLOUR = (40, 96, 196)
STRIP_AXIS_COLOUR = (150, 150, 150)
# Ends of the diverging colour scale (ColorBrewer RdBu): negative -> blue, zero -> white, positive -> red.
NEGATIVE_COLOUR = np.array([33, 102, 172], dtype=np.float64)
ZERO_COLOUR = np.array([255, 255, 255], dtype=np.float64)
POSITIVE_COLOUR = np.array([178, 24, 43], dtype=np.float64)


def frame_shape(grid_size: int, show_panel: bool) -> tuple[int, int, int]:
    """Shape ``(height, width, 3)`` of the frames drawn for a ``grid_size`` x ``grid_size`` grid (border included)."""
    grid_pixels = CELL_SIZE * grid_size
    if show_panel:
        return grid_pixels + STATUS_HEIGHT + STRIP_HEIGHT, 2 * grid_pixels, 3
    return grid_pixels + STATUS_HEIGHT, grid_pixels, 3


def arrow_keys() -> tuple[int, int, int, int]:
    """pygame key codes of the arrow keys, in action order: up, right, down, left."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    return pygame.K_UP, pygame.K_RIGHT, pygame.K_DOWN, pygame.K_LEFT


def heat_map_colours(matrix: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Map a matrix to RGB colours on a colour scale symmetric around 0.

    Parameters
    ----------
    matrix : np.ndarray
        A 2-D array of finite values.
    scale : float or None
        The value drawn in the full end colours (larger magnitudes saturate); ``None``: the largest absolute
        value of ``matrix``.

    Returns
    -------
    colours : np.ndarray
        ``uint8`` array of shape ``matrix.shape + (3,)``: white at 0, red at ``+scale``, blue at ``-scale``.
    scale : float
        The scale used (1.0 for an all-zero matrix without a given scale, which is then all white).
    """
    if scale is None:
        largest = float(np.max(np.abs(matrix))) if matrix.size else 0.0
        scale = largest if largest > 0 else 1.0
    normalised = np.clip(matrix / scale, -1.0, 1.0)[..., None]
    end_colour = np.where(normalised >= 0, POSITIVE_COLOUR, NEGATIVE_COLOUR)
    colours = ZERO_COLOUR + np.abs(normalised) * (end_colour - ZERO_COLOUR)
    return np.rint(colours).astype(np.uint8), scale


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that is >= ``value`` (1.0 for ``value <= 0``): the top of
    the strip's axis, which then changes only a few times in an episode rather than at every frame."""
    if not value > 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1.0, 2.0, 5.0, 10.0) if step * power >= value * (1 - 1e-9))


class MazeRenderer:
    """Draws the maze, the agent and its trail, the reward square, a status line and an optional heat-map panel.

    Parameters
    ----------
    walls : np.ndarray
        Boolean wall map of the full grid (border included), indexed ``[row, col]``.
    render_mode : str
        ``"rgb_array"`` (off-screen, :meth:`render` returns the frame) or ``"human"`` (a window).
    render_fps : int
        Frame rate of the ``"human"`` window.
    show_panel : bool
        Reserve a square side panel, right of the maze, for a heat map, and a strip along the bottom.
    """

    def __init__(self, walls: np.ndarray, *, render_mode: str, render_fps: int, show_panel: bool) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        self.walls = walls
        self.render_mode = render_mode
        self.render_fps = render_fps
        self.show_panel = show_panel
        self.grid_pixels = CELL_SIZE * walls.shape[0]
        height, width, _ = frame_shape(walls.shape[0], show_panel)
        self.canvas = pygame.Surface((width, height))
        # The walls never move: draw them once and start every frame from this picture.
        self.maze_background = pygame.Surface((self.grid_pixels, self.grid_pixels))
        self._draw_walls()
        self.window: pygame.Surface | None = None
        self.clock: pygame.time.Clock | None = None
        self._fonts: dict[int, pygame.font.Font] = {}
        # The episode so far, as seen through the frames drawn: see the module docstring.
        self._last_step = -1
        self._last_hits = 0
        self._trail: deque[tuple[int, int]] = deque(maxlen=TRAIL_LENGTH)
        self._hit_steps: list[int] = []
        self._series: dict[int, float] = {}

    def _font(self, size: int):
        import pygame

        # Another pygame user in the process (e.g. gymnasium.utils.play) may have called pygame.quit().
        if not pygame.font.get_init():
            pygame.font.init()
            self._fonts.clear()
        if size not in self._fonts:
            self._fonts[size] = pygame.font.Font(None, size)
        return self._fonts[size]

    def _blit_text(self, text: str, size: int, colour: tuple[int, int, int], centre: tuple[int, int], width: int):
        """Draw ``text`` centred at ``centre``, shrunk to fit ``width`` pixels if needed."""
        import pygame

        image = self._font(size).render(text, True, colour)
        if image.get_width() > width:
            shrink = width / image.get_width()
            image = pygame.transform.smoothscale(image, (width, max(1, round(image.get_height() * shrink))))
        self.canvas.blit(image, image.get_rect(center=centre))

    def render(
        self,
        *,
        agent_position: tuple[int, int],
        reward_position: tuple[int, int],
        status: str,
        panel_matrix: np.ndarray | None,
        panel_title: str,
        step: int = 0,
        episode_length: int = 1,
        reward_hits: int = 0,
        panel_scale: float | None = None,
        panel_value: float | None = None,
        panel_value_label: str = "",
        panel_value_scale: float | None = None,
    ) -> np.ndarray | None:
        """Draw one frame; return it as an ``(H, W, 3)`` ``uint8`` array in ``"rgb_array"`` mode, else show it.

        ``step``, ``episode_length`` and ``reward_hits`` place the frame in its episode (trail, hit flash, strip);
        ``panel_scale`` fixes the heat map's colour scale (``None``: fitted to this matrix); ``panel_value`` is
        this step's point of the strip, labelled ``panel_value_label``, on an axis from 0 to ``panel_value_scale``
        (``None``: :func:`nice_ceiling` of the values so far).
        """
        import pygame

        self._remember(step, agent_position, reward_hits, panel_value)
        self._draw_maze(agent_position, reward_position, step)
        status_rect = pygame.Rect(0, self.grid_pixels, self.grid_pixels, STATUS_HEIGHT)
        hit_now = bool(self._hit_steps) and self._hit_steps[-1] == step
        pygame.draw.rect(self.canvas, HIT_COLOUR if hit_now else STATUS_BACKGROUND_COLOUR, status_rect)
        self._blit_text(status, 24, TEXT_COLOUR, status_rect.center, self.grid_pixels - 2 * PANEL_MARGIN)
        if self.show_panel:
            self._draw_panel(panel_matrix, panel_title, panel_scale)
            self._draw_strip(step, episode_length, panel_value_label, panel_value_scale)

        if self.render_mode == "rgb_array":
            width, height = self.canvas.get_size()
            # tobytes gives rows top to bottom, the (H, W, 3) layout; the bytearray makes the frame writeable.
            pixels = bytearray(pygame.image.tobytes(self.canvas, "RGB"))
            return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3)

        if self.window is None:
            pygame.display.init()
            pygame.display.set_caption("PlasticMaze-v0")
            self.window = pygame.display.set_mode(self.canvas.get_size())
            self.clock = pygame.time.Clock()
        assert self.clock is not None
        self.window.blit(self.canvas, (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self.clock.tick(self.render_fps)
        return None

    def _remember(
        self, step: int, agent_position: tuple[int, int], reward_hits: int, panel_value: float | None
    ) -> None:
        if step < self._last_step or reward_hits < self._last_hits:  # a new episode
            self._trail.clear()
            self._hit_steps.clear()
            self._series.clear()
            self._last_hits = 0
        if step != self._last_step or not self._trail:
            self._trail.append((int(agent_position[0]), int(agent_position[1])))
        if reward_hits > self._last_hits:
            self._hit_steps.append(step)
        if panel_value is not None:
            self._series[step] = float(panel_value)
        self._last_step, self._last_hits = step, reward_hits

    def _draw_walls(self) -> None:
        import pygame

        self.maze_background.fill(BACKGROUND_COLOUR)
        for (row, col), is_wall in np.ndenumerate(self.walls):
            cell = pygame.Rect(col * CELL_SIZE, row * CELL_SIZE, CELL_SIZE, CELL_SIZE)
            if is_wall:
                pygame.draw.rect(self.maze_background, WALL_COLOUR, cell)
            else:
                # Inset by one pixel so the background shows as thin grid lines between free squares.
                pygame.draw.rect(self.maze_background, FREE_COLOUR, cell.inflate(-2, -2))

    def _draw_maze(self, agent_position: tuple[int, int], reward_position: tuple[int, int], step: int) -> None:
        import pygame

        self.canvas.blit(self.maze_background, (0, 0))

        # The trail, oldest first: older squares fade towards the free colour (the current square is the agent).
        free, agent = np.array(FREE_COLOUR, dtype=np.float64), np.array(AGENT_COLOUR, dtype=np.float64)
        trail = list(self._trail)[:-1]
        for age, (row, col) in enumerate(reversed(trail), start=1):
            fade = 0.55 * (1 - age / TRAIL_LENGTH)
            colour = tuple(int(round(c)) for c in free + fade * (agent - free))
            cell = pygame.Rect(col * CELL_SIZE, row * CELL_SIZE, CELL_SIZE, CELL_SIZE)
            pygame.draw.rect(self.canvas, colour, cell.inflate(-10, -10), border_radius=6)

        reward_row, reward_col = reward_position
        reward_cell = pygame.Rect(reward_col * CELL_SIZE, reward_row * CELL_SIZE, CELL_SIZE, CELL_SIZE)
        pygame.draw.rect(self.canvas, REWARD_COLOUR, reward_cell.inflate(-8, -8), border_radius=4)
        pygame.draw.rect(self.canvas, REWARD_BORDER_COLOUR, reward_cell.inflate(-8, -8), width=2, border_radius=4)
        if self._hit_steps and 0 <= step - self._hit_steps[-1] < HIT_FLASH_FRAMES:
            # A ring that grows and thins out over the frames after a hit.
            since = step - self._hit_steps[-1]
            radius = int(CELL_SIZE * (0.55 + 0.25 * since))
            thickness = max(2, 7 - since)
            pygame.draw.circle(self.canvas, HIT_COLOUR, reward_cell.center, radius, width=thickness)

        agent_row, agent_col = agent_position
        agent_centre = (agent_col * CELL_SIZE + CELL_SIZE // 2, agent_row * CELL_SIZE + CELL_SIZE // 2)
        pygame.draw.circle(self.canvas, AGENT_COLOUR, agent_centre, int(CELL_SIZE * 0.36))
        pygame.draw.circle(self.canvas, AGENT_BORDER_COLOUR, agent_centre, int(CELL_SIZE * 0.36), width=2)

    def _draw_panel(self, matrix: np.ndarray | None, title: str, scale: float | None) -> None:
        import pygame

        left = self.grid_pixels
        width = self.canvas.get_width() - left
        height = self.grid_pixels + STATUS_HEIGHT
        pygame.draw.rect(self.canvas, PANEL_BACKGROUND_COLOUR, pygame.Rect(left, 0, width, height))
        text_width = width - 2 * PANEL_MARGIN
        self._blit_text(title, 26, PANEL_TEXT_COLOUR, (left + width // 2, PANEL_TITLE_HEIGHT // 2 + 4), text_width)

        side = min(text_width, height - PANEL_TITLE_HEIGHT - PANEL_LEGEND_HEIGHT - 2 * PANEL_MARGIN)
        area = pygame.Rect(0, 0, side, side)
        area.center = (left + width // 2, PANEL_TITLE_HEIGHT + PANEL_MARGIN + side // 2)
        if matrix is None:
            pygame.draw.rect(self.canvas, BACKGROUND_COLOUR, area, width=1)
            self._blit_text("no matrix set", 22, PANEL_TEXT_COLOUR, area.center, text_width)
            return

        colours, used_scale = heat_map_colours(matrix, scale)
        # surfarray is indexed [x, y], i.e. [col, row]; scale() without smoothing keeps each entry a crisp block.
        heat_map = pygame.transform.scale(pygame.surfarray.make_surface(np.transpose(colours, (1, 0, 2))), area.size)
        self.canvas.blit(heat_map, area)
        pygame.draw.rect(self.canvas, PANEL_TEXT_COLOUR, area, width=1)
        self._draw_legend(used_scale, area.left, area.bottom + PANEL_MARGIN, area.width, fixed=scale is not None)

    def _draw_legend(self, scale: float, left: int, top: int, width: int, fixed: bool) -> None:
        """A colour bar from -scale to +scale with its end values, so heat maps of different frames compare."""
        import pygame

        label_width = width // 4
        bar_width = width - 2 * label_width
        ramp = heat_map_colours(np.linspace(-1.0, 1.0, bar_width)[None, :])[0]
        bar = pygame.transform.scale(pygame.surfarray.make_surface(np.transpose(ramp, (1, 0, 2))), (bar_width, 14))
        bar_rect = bar.get_rect(topleft=(left + label_width, top))
        self.canvas.blit(bar, bar_rect)
        pygame.draw.rect(self.canvas, PANEL_TEXT_COLOUR, bar_rect, width=1)
        centre_y = bar_rect.centery
        self._blit_text(f"{-scale:.3g}", 20, PANEL_TEXT_COLOUR, (left + label_width // 2, centre_y), label_width)
        self._blit_text(
            f"{scale:+.3g}", 20, PANEL_TEXT_COLOUR, (left + width - label_width // 2, centre_y), label_width
        )
        note = "scale fixed over the episode" if fixed else "scale fitted to this frame"
        self._blit_text(note, 18, STRIP_AXIS_COLOUR, (left + width // 2, bar_rect.bottom + 9), bar_width)

    def _draw_strip(self, step: int, episode_length: int, label: str, top_value: float | None) -> None:
        """The panel's number against the step (0 to the episode length) along the bottom, hits as ticks."""
        import pygame

        top = self.grid_pixels + STATUS_HEIGHT
        strip = pygame.Rect(0, top, self.canvas.get_width(), STRIP_HEIGHT)
        pygame.draw.rect(self.canvas, PANEL_BACKGROUND_COLOUR, strip)
        pygame.draw.line(self.canvas, STRIP_AXIS_COLOUR, strip.topleft, strip.topright)
        label_width = 120
        plot = pygame.Rect(label_width, top + 10, strip.width - label_width - PANEL_MARGIN, STRIP_HEIGHT - 24)
        if top_value is None:
            top_value = nice_ceiling(max(self._series.values(), default=0.0))
        self._blit_text(label or "panel", 20, PANEL_TEXT_COLOUR, (label_width // 2, plot.top + 8), label_width - 8)
        self._blit_text(f"0 .. {top_value:.3g}", 18, STRIP_AXIS_COLOUR, (label_width // 2, plot.top + 26), 110)
        self._blit_text("| reward hit", 18, HIT_COLOUR, (label_width // 2, plot.bottom + 4), label_width - 8)
        pygame.draw.line(self.canvas, STRIP_AXIS_COLOUR, plot.bottomleft, plot.bottomright)

        def x_of(at_step: int) -> int:
            return plot.left + round(plot.width * min(at_step, episode_length) / max(episode_length, 1))

        for hit_step in self._hit_steps:
            pygame.draw.line(self.canvas, HIT_COLOUR, (x_of(hit_step), plot.top), (x_of(hit_step), plot.bottom), 2)
        points = [
            (x_of(at_step), plot.bottom - round(plot.height * min(value / top_value, 1.0)))
            for at_step, value in sorted(self._series.items())
        ]
        if len(points) > 1:
            pygame.draw.lines(self.canvas, STRIP_LINE_COLOUR, False, points, 2)
        elif points:
            pygame.draw.circle(self.canvas, STRIP_LINE_COLOUR, points[0], 2)
        pygame.draw.line(self.canvas, PANEL_TEXT_COLOUR, (x_of(step), plot.top), (x_of(step), plot.bottom), 1)
        self._blit_text(f"step {episode_length}", 16, STRIP_AXIS_COLOUR, (plot.right - 24, plot.bottom + 7), 60)

    def close(self) -> None:
        """Close the window, if one was opened; safe to call more than once."""
        if self.window is not None:
            import pygame

            pygame.display.quit()
            self.window = None
            self.clock = None
