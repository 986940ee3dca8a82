"""Pygame drawing of :class:`~plastic_rl.envs.maze.PlasticMazeEnv`.

pygame is imported only when a :class:`MazeRenderer` is created, so importing this module (and the env) stays
cheap and works on machines without a display.
"""

from __future__ import annotations

import os

import numpy as np

CELL_SIZE = 40
STATUS_HEIGHT = 32
PANEL_TITLE_HEIGHT = 32
PANEL_LEGEND_HEIGHT = 32
PANEL_MARGIN = 12

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
# Ends of the diverging colour scale (ColorBrewer RdBu): negative -> blue, zero -> white, positive -> red.
NEGATIVE_COLOUR = np.array([33, 102, 172], dtype=np.float64)
ZERO_COLOUR = np.array([255, 255, 255], dtype=np.float64)
POSITIVE_COLOUR = np.array([178, 24, 43], dtype=np.float64)


def frame_shape(grid_size: int, show_panel: bool) -> tuple[int, int, int]:
    """Shape ``(height, width, 3)`` of the frames drawn for a ``grid_size`` x ``grid_size`` grid (border included)."""
    grid_pixels = CELL_SIZE * grid_size
    return grid_pixels + STATUS_HEIGHT, grid_pixels * (2 if show_panel else 1), 3


def arrow_keys() -> tuple[int, int, int, int]:
    """pygame key codes of the arrow keys, in action order: up, right, down, left."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    return pygame.K_UP, pygame.K_RIGHT, pygame.K_DOWN, pygame.K_LEFT


def heat_map_colours(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """Map a matrix to RGB colours on a colour scale symmetric around 0.

    Parameters
    ----------
    matrix : np.ndarray
        A 2-D array of finite values.

    Returns
    -------
    colours : np.ndarray
        ``uint8`` array of shape ``matrix.shape + (3,)``: white at 0, red at ``+scale``, blue at ``-scale``.
    scale : float
        The largest absolute value of ``matrix`` (1.0 for an all-zero matrix, which is then all white).
    """
    largest = float(np.max(np.abs(matrix))) if matrix.size else 0.0
    scale = largest if largest > 0 else 1.0
    normalised = (matrix / scale)[..., None]
    end_colour = np.where(normalised >= 0, POSITIVE_COLOUR, NEGATIVE_COLOUR)
    colours = ZERO_COLOUR + np.abs(normalised) * (end_colour - ZERO_COLOUR)
    return np.rint(colours).astype(np.uint8), scale


class MazeRenderer:
    """Draws the maze, the agent, the reward square, a status line and an optional heat-map panel.

    Parameters
    ----------
    walls : np.ndarray
        Boolean wall map of the full grid (border included), indexed ``[row, col]``.
    render_mode : str
        ``"rgb_array"`` (off-screen, :meth:`render` returns the frame) or ``"human"`` (a window).
    render_fps : int
        Frame rate of the ``"human"`` window.
    show_panel : bool
        Reserve a square side panel, right of the maze, for a heat map.
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
        self.window = None
        self.clock = None
        self._fonts: dict[int, pygame.font.Font] = {}

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
    ) -> np.ndarray | None:
        """Draw one frame; return it as an ``(H, W, 3)`` ``uint8`` array in ``"rgb_array"`` mode, else show it."""
        import pygame

        self._draw_maze(agent_position, reward_position)
        status_rect = pygame.Rect(0, self.grid_pixels, self.grid_pixels, STATUS_HEIGHT)
        pygame.draw.rect(self.canvas, STATUS_BACKGROUND_COLOUR, status_rect)
        self._blit_text(status, 24, TEXT_COLOUR, status_rect.center, self.grid_pixels - 2 * PANEL_MARGIN)
        if self.show_panel:
            self._draw_panel(panel_matrix, panel_title)

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
        self.window.blit(self.canvas, (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self.clock.tick(self.render_fps)
        return None

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

    def _draw_maze(self, agent_position: tuple[int, int], reward_position: tuple[int, int]) -> None:
        import pygame

        self.canvas.blit(self.maze_background, (0, 0))

        reward_row, reward_col = reward_position
        reward_cell = pygame.Rect(reward_col * CELL_SIZE, reward_row * CELL_SIZE, CELL_SIZE, CELL_SIZE)
        pygame.draw.rect(self.canvas, REWARD_COLOUR, reward_cell.inflate(-8, -8), border_radius=4)
        pygame.draw.rect(self.canvas, REWARD_BORDER_COLOUR, reward_cell.inflate(-8, -8), width=2, border_radius=4)

        agent_row, agent_col = agent_position
        agent_centre = (agent_col * CELL_SIZE + CELL_SIZE // 2, agent_row * CELL_SIZE + CELL_SIZE // 2)
        pygame.draw.circle(self.canvas, AGENT_COLOUR, agent_centre, int(CELL_SIZE * 0.36))
        pygame.draw.circle(self.canvas, AGENT_BORDER_COLOUR, agent_centre, int(CELL_SIZE * 0.36), width=2)

    def _draw_panel(self, matrix: np.ndarray | None, title: str) -> None:
        import pygame

        left = self.grid_pixels
        width = self.canvas.get_width() - left
        height = self.canvas.get_height()
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

        colours, scale = heat_map_colours(matrix)
        # surfarray is indexed [x, y], i.e. [col, row]; scale() without smoothing keeps each entry a crisp block.
        heat_map = pygame.transform.scale(pygame.surfarray.make_surface(np.transpose(colours, (1, 0, 2))), area.size)
        self.canvas.blit(heat_map, area)
        pygame.draw.rect(self.canvas, PANEL_TEXT_COLOUR, area, width=1)
        self._draw_legend(scale, area.left, area.bottom + PANEL_MARGIN, area.width)

    def _draw_legend(self, scale: float, left: int, top: int, width: int) -> None:
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

    def close(self) -> None:
        """Close the window, if one was opened; safe to call more than once."""
        if self.window is not None:
            import pygame

            pygame.display.quit()
            self.window = None
            self.clock = None
