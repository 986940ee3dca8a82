"""SB3 callbacks of the suite: :class:`TraceVideoCallback` shows an RL run's memory forming in TensorBoard,
:class:`HeldOutEvaluationCallback` measures its learning-to-learn signature as it trains, and
:class:`OneEventFile` keeps a resumed run's TensorBoard events in one file without repeated steps, :class:`ProgressBar`
draws the commands' progress bar, and :class:`EvalCallback` is SB3's, writing its file atomically.

The supervised trainer logs ``w`` and ``alpha`` images; this is the RL side's picture: every ``video_freq`` env
steps, one episode of the current policy on the maze, drawn with the trace panel
(:mod:`plastic_rl.agents.trace_panel`), goes to TensorBoard as an animation (``trace/episode``, in the Images
tab) and its last frame as an image (``trace/last_frame``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.callbacks import EvalCallback as SB3EvalCallback
from stable_baselines3.common.logger import Image

from plastic_rl.agents.recording import FrameCollector, gif_bytes
from plastic_rl.agents.trace_panel import TracePanel, play_episode
from plastic_rl.core.files import atomic_path
from plastic_rl.core.options import check_positive_int


class HeldOutEvaluationCallback(BaseCallback):
    """Every ``eval_freq`` env steps (at the end of a rollout), the current policy on ``n_episodes`` held-out
    episodes (:func:`plastic_rl.agents.evaluation.evaluate`: env seeds never used in training, sampled actions
    unless ``deterministic``, its own random stream; ``env_kwargs`` those of the run, or e.g. of held-out classes),
    logged as ``heldout/*`` (reward, hits, first-hit steps, later gaps and their ratio) to every output of the model's
    logger: TensorBoard and the run's ``progress.csv``.

    The same episodes each time, so that the values form a curve of the signature over training; a run
    resumed from a checkpoint measures the same points as an uninterrupted one.
    """

    def __init__(
        self,
        env_id: str,
        eval_freq: int,
        n_episodes: int,
        env_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        deterministic: bool = False,
    ) -> None:
        super().__init__(verbose)
        self.env_id = env_id
        self.deterministic = deterministic
        self.eval_freq = check_positive_int("eval_freq", eval_freq)
        self.n_episodes = check_positive_int("n_episodes", n_episodes)
        self.env_kwargs = dict(env_kwargs or {})
        self._measured = 0  # evaluations done: one per multiple of eval_freq passed

    def _init_callback(self) -> None:
        # The model's count: the callback's own is only set at the first step, so a resumed run would measure again
        # at the step it resumed from.
        self._measured = self.model.num_timesteps // self.eval_freq

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps // self.eval_freq > self._measured:
            from plastic_rl.agents.evaluation import evaluate, log_summary

            self._measured = self.model.num_timesteps // self.eval_freq
            result = evaluate(
                self.model, self.env_id, self.env_kwargs, n_episodes=self.n_episodes, deterministic=self.deterministic
            )
            self.logger.record("heldout/total_timesteps", self.num_timesteps)  # the CSV row's x
            log_summary(self.logger, result, self.num_timesteps)


class TraceVideoCallback(BaseCallback):
    """Log an episode of the current policy, with its trace panel, to TensorBoard every ``video_freq`` steps.

    Parameters
    ----------
    env_id : the maze env id (its env must take ``show_trace_panel``).
    video_freq : env steps between two videos (counted over all envs, as ``num_timesteps``).
    env_kwargs : keywords of the env (as in training).
    panel : what the panel shows: ``"trace"``, ``"plastic"`` or ``"effective"`` (see :class:`TracePanel`).
    pixel_stride : keep every ``pixel_stride``-th pixel row and column (1: full size, where the panel's text reads).
    seed : the env seed of the logged episodes (the same episode each time, so that videos compare).
    """

    def __init__(
        self,
        env_id: str,
        video_freq: int,
        env_kwargs: dict[str, Any] | None = None,
        panel: str = "plastic",
        pixel_stride: int = 1,
        seed: int = 0,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.env_id = env_id
        self.video_freq = check_positive_int("video_freq", video_freq)
        self.env_kwargs = dict(env_kwargs or {})
        self.panel_content = panel
        self.pixel_stride = check_positive_int("pixel_stride", pixel_stride)
        self.seed = seed
        self._next_video = video_freq
        self._panel: TracePanel | None = None

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_video:
            self._next_video += self.video_freq
            self.log_episode()
        return True

    def log_episode(self) -> None:
        """Play and log one episode now."""
        import torch as th

        policy = self.model.policy
        plastic = getattr(policy, "plasticity", "none") != "none"
        # The weights change between videos: the neuron order is the first video's, so that videos compare.
        if plastic and self._panel is None:
            self._panel = TracePanel(policy, self.panel_content)
        env = gym.make(self.env_id, render_mode="rgb_array", show_trace_panel=plastic, **self.env_kwargs)
        episodes: list[list[Any]] = []
        recorder = FrameCollector(env, episodes)
        rng_state = th.get_rng_state()  # the logged episode must not change the training's random draws
        try:
            silent = gym.make(self.env_id, **self.env_kwargs)
            _, scales = play_episode(self.model, silent, self.seed, False, self._panel)
            silent.close()
            reward, _ = play_episode(self.model, recorder, self.seed, False, self._panel, scales)
        finally:
            th.set_rng_state(rng_state)
            env.close()
        video = np.stack(episodes[-1])[:, :: self.pixel_stride, :: self.pixel_stride]
        self._write_animation("trace/episode", video, env.metadata.get("render_fps", 10))
        exclude = ("stdout", "log", "json", "csv")
        self.logger.record("trace/last_frame", Image(video[-1], "HWC"), exclude=exclude)
        self.logger.record("trace/episode_reward", reward)
        self.logger.dump(self.num_timesteps)

    def _write_animation(self, tag: str, frames: np.ndarray, fps: int) -> None:
        # An animated GIF in an image summary: what TensorBoard shows as a video. SB3's Video goes through
        # torch's add_video, which needs moviepy 1's moviepy.editor (gone in moviepy 2) and skips the video
        # without it; Pillow encodes the GIF here instead.
        from stable_baselines3.common.logger import TensorBoardOutputFormat
        from tensorboard.compat.proto.summary_pb2 import Summary

        encoded = gif_bytes(frames, round(1000 / fps))
        height, width = frames.shape[1:3]
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        for output in self.logger.output_formats:
            if isinstance(output, TensorBoardOutputFormat) and output.writer.file_writer is not None:
                output.writer.file_writer.add_summary(summary, self.num_timesteps)


class OneEventFile(BaseCallback):
    """For a run resumed from a checkpoint: move the stopped run's TensorBoard events up to the checkpoint's step
    into the resumed run's event file, and remove the stopped run's files, so that the run keeps one event file in
    which no step repeats (the stopped run's events after the checkpoint are logged again by the resumed run)."""

    def _on_training_start(self) -> None:
        from stable_baselines3.common.logger import TensorBoardOutputFormat
        from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

        for output in self.logger.output_formats:
            if not isinstance(output, TensorBoardOutputFormat) or output.writer.file_writer is None:
                continue
            writer = output.writer.file_writer
            ours = Path(writer.event_writer._file_name)  # made when learn() started (tensorboard keeps its name here)
            earlier = sorted(path for path in ours.parent.glob("events.out.tfevents.*") if path != ours)
            for path in earlier:
                for event in LegacyEventFileLoader(str(path)).Load():
                    if not event.HasField("file_version") and event.step <= self.num_timesteps:
                        writer.add_event(event)
            writer.flush()
            for path in earlier:
                path.unlink()

    def _on_step(self) -> bool:
        return True


class ProgressBar(BaseCallback):
    """A tqdm bar of env steps up to ``total``, drawn as the supervised trainer draws its bar of steps (one progress
    library for every command; SB3's own ``progress_bar=True`` draws with rich instead)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self._bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, initial=min(self.num_timesteps, self.total), unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        self._bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self._bar.close()


class EvalCallback(SB3EvalCallback):
    """SB3's ``EvalCallback``, writing ``evaluations.npz`` atomically (``best_model.zip``: the model's save)."""

    def _on_step(self) -> bool:
        evaluates_now = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
        if self.log_path is None or not evaluates_now:
            return super()._on_step()
        final = self.log_path
        with atomic_path(f"{final}.npz") as partial:
            self.log_path = str(partial)  # it ends with ".npz", so numpy writes exactly there
            try:
                return super()._on_step()
            finally:
                self.log_path = final
