"""Recording the episodes an agent plays: MP4 through Gymnasium's ``RecordVideo`` (needs moviepy, in the
``plastic-rl[video]`` extra), or a GIF written with Pillow (:func:`gif_bytes`, from the frames a
:class:`FrameCollector` keeps; TensorBoard's trace video uses both too)."""

from __future__ import annotations

import importlib.util
import io
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from plastic_rl.core.files import atomic_write_bytes


class VideoRecorder:
    """Records the episodes played on an ``rgb_array`` env: through Gymnasium's ``RecordVideo`` as MP4 when
    moviepy is installed and ``path`` does not end in ``.gif``, else as a GIF written with Pillow.

    With several episodes, episode ``k`` (from 1) goes to ``<stem>-<k><suffix>``.
    """

    def __init__(self, path: Path, n_episodes: int) -> None:
        self.path = path
        self.n_episodes = n_episodes
        self.as_gif = path.suffix.lower() == ".gif" or importlib.util.find_spec("moviepy") is None
        if self.as_gif and path.suffix.lower() != ".gif":
            print(f"moviepy is not installed (pip install 'plastic-rl[video]'): writing GIFs for {path}")
        self._folder: tempfile.TemporaryDirectory | None = None
        self._frames: list[list] = []
        self._frame_ms = 100

    def wrap(self, env: gym.Env) -> gym.Env:
        self._frame_ms = round(1000 / env.metadata.get("render_fps", 10))
        if self.as_gif:
            return FrameCollector(env, self._frames)
        self.path.parent.mkdir(parents=True, exist_ok=True)  # a fault names the user's folder, not a temporary one
        self._folder = tempfile.TemporaryDirectory(prefix=".recording-", dir=self.path.parent or ".")
        return gym.wrappers.RecordVideo(
            env,
            str(Path(self._folder.name) / "videos"),
            episode_trigger=lambda _: True,
            name_prefix="episode",
            disable_logger=True,
        )

    def _target(self, episode: int) -> Path:
        suffix = ".gif" if self.as_gif else self.path.suffix or ".mp4"
        stem = self.path.with_suffix("")
        return Path(f"{stem}{suffix}") if self.n_episodes == 1 else Path(f"{stem}-{episode + 1}{suffix}")

    def save(self) -> list[Path]:
        """Write the recorded episodes (call after closing the env); returns the files written."""
        written = []
        if self.as_gif:
            for episode, frames in enumerate(self._frames):
                atomic_write_bytes(self._target(episode), gif_bytes(frames, self._frame_ms))
                written.append(self._target(episode))
            return written
        assert self._folder is not None
        for episode in range(self.n_episodes):
            video = Path(self._folder.name) / "videos" / f"episode-episode-{episode}.mp4"
            atomic_write_bytes(self._target(episode), video.read_bytes())
            written.append(self._target(episode))
        self._folder.cleanup()
        return written


def gif_bytes(frames: np.ndarray | list[np.ndarray], frame_ms: int) -> bytes:
    """An animated GIF of ``frames`` (RGB uint8), ``frame_ms`` milliseconds each, looping.

    One 64-colour palette for all frames, without dithering: the maze and its panel are flat colours, so the GIF
    stays small (about 2 MB for a full-size 250-step episode with the panel; 7 MB with a dithered palette per
    frame)."""
    from PIL import Image as PillowImage

    plain = PillowImage.Dither.NONE
    palette = PillowImage.fromarray(frames[len(frames) // 2]).quantize(colors=64, dither=plain)
    images = [PillowImage.fromarray(frame).quantize(palette=palette, dither=plain) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


class FrameCollector(gym.Wrapper):
    """Keeps every frame rendered after ``reset`` and each step, one list per episode, in ``episodes``."""

    def __init__(self, env: gym.Env, episodes: list[list[Any]]) -> None:
        super().__init__(env)
        self.episodes = episodes

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        result = self.env.reset(**kwargs)
        self.episodes.append([self.env.render()])
        return result

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        result = self.env.step(action)
        self.episodes[-1].append(self.env.render())
        return result
