"""An RL training run in its folder: PlasticA2C, PlasticPPO or sb3-contrib's RecurrentPPO (RL Zoo conventions).

A run writes ``LOGDIR/<algo>/<env>_<N>/``: the final model ``<env>.zip``, ``best_model.zip`` (with ``--eval-freq``),
checkpoints ``rl_checkpoint_<steps>_steps.pt`` (with ``--save-freq``; the last two are kept), ``config.yml`` and
one monitor CSV per env (the folder's layout: :mod:`plastic_rl.agents.run_folders`). :func:`train_new_run` starts a
run in the next numbered folder, :func:`resume_run` continues one exactly from a checkpoint (see
:mod:`plastic_rl.agents.checkpoints`), and :func:`train_run` trains into a given folder and resumes what is there.
Each takes a :class:`~plastic_rl.agents.config.TrainConfig`.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import shutil
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from plastic_rl.agents.a2c import rollout_bytes
from plastic_rl.agents.callbacks import (
    EvalCallback,
    HeldOutEvaluationCallback,
    OneEventFile,
    ProgressBar,
    TraceVideoCallback,
)
from plastic_rl.agents.checkpoints import (
    ResumeCheckpointCallback,
    checkpoints_newest_first,
    newest_readable_checkpoint,
    read_checkpoint,
    restore_checkpoint,
)
from plastic_rl.agents.config import TrainConfig
from plastic_rl.agents.curves import write_learning_curve
from plastic_rl.agents.diagnostics import ProgressCSVCallback
from plastic_rl.agents.evaluation import compare_with_random, format_table, log_summary, write_results
from plastic_rl.agents.extractors import EXTRACTORS
from plastic_rl.agents.hyperparameters import (
    RUN_KEYS,
    algorithm_class,
    check_env_id,
    hyperparameters_for_policy,
    parse_key_values,
    policy_settings,
)
from plastic_rl.agents.make_env import make_training_env
from plastic_rl.agents.run_folders import next_run_folder, write_run_config
from plastic_rl.agents.zoo import write_run_files
from plastic_rl.core.divergence import TrainingDiverged
from plastic_rl.core.files import atomic_write
from plastic_rl.core.memory import check_fits
from plastic_rl.core.options import (
    BadInputError,
    check_choice,
    check_device,
    check_positive_int,
    check_utf8_path,
    reported_as_bad_input,
)


def algorithm_arguments(hyperparameters: dict[str, Any], n_envs: int) -> dict[str, Any]:
    """The keywords of the algorithm's constructor in a hyperparameter entry."""
    algorithm_kwargs = {key: value for key, value in hyperparameters.items() if key not in RUN_KEYS}
    if algorithm_kwargs.get("batch_size") == "rollout":
        algorithm_kwargs["batch_size"] = algorithm_kwargs["n_steps"] * n_envs
    return algorithm_kwargs


def _default_n_steps(algo: str) -> int:
    """The ``n_steps`` an algorithm's class takes by default (the first class in its MRO that names it)."""
    for cls in algorithm_class(algo).__mro__:
        init = vars(cls).get("__init__")
        parameter = None if init is None else inspect.signature(init).parameters.get("n_steps")
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    raise ValueError(f"--algo {algo!r} has no default n_steps: give -params n_steps:N")


def build_model(
    algo: str,
    policy: str,
    env: Any,
    hyperparameters: dict[str, Any],
    seed: int,
    device: str = "auto",
    tensorboard_log: str | None = None,
    verbose: int = 0,
) -> Any:
    """The ``algo`` model with the ``--policy`` ``policy`` on ``env``, from a hyperparameter entry."""
    algorithm_kwargs = algorithm_arguments(hyperparameters, env.num_envs)
    policy_name, policy_kwargs = policy_settings(algo, policy, hyperparameters.get("policy_kwargs") or {})
    if isinstance(policy_kwargs.get("features_extractor_class"), str):  # named in -params or the YAML
        name = check_choice("features_extractor_class", policy_kwargs["features_extractor_class"], EXTRACTORS)
        policy_kwargs = {**policy_kwargs, "features_extractor_class": EXTRACTORS[name]}
    return algorithm_class(algo)(
        policy_name,
        env,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device=device,
        tensorboard_log=tensorboard_log,
        verbose=verbose,
        **algorithm_kwargs,
    )


# Checkpoints kept per run: the latest, and the one before in case the machine died while the latest was written.
KEPT_CHECKPOINTS = 2
# Options that change how a run is shown, not what it computes: they may differ when it is resumed.
DISPLAY_OPTIONS = ("no_progress_bar", "verbose", "resume", "log_folder")


def stored_config(payload: dict[str, Any]) -> TrainConfig:
    """A checkpoint's run, with today's defaults for options added since it was written."""
    return TrainConfig.from_options(payload["arguments"])


def train_new_run(config: TrainConfig) -> Path:
    """Train the run of ``config`` in the next numbered folder under its ``log_folder``; returns the model path.

    A run of bad input or of an unwritable output leaves nothing behind (nor the folders made for it), unless it has
    checkpoints worth resuming.
    """
    folder = next_run_folder(config.log_folder, config.algo, config.env)
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True)
    try:
        return train(config, folder)
    except (BadInputError, OSError):
        if not checkpoints_newest_first(folder):
            shutil.rmtree(folder, ignore_errors=True)
            for path in created[1:]:  # the parents made above, deepest first, if nothing else is in them
                with contextlib.suppress(OSError):
                    path.rmdir()
        raise


def _checkpoint_to_resume(resume: str) -> tuple[Path, dict[str, Any]]:
    """``--resume``'s checkpoint (a run folder's newest readable one) and its contents; bad input otherwise."""
    checkpoint = Path(resume)
    if checkpoint.is_dir():
        found = newest_readable_checkpoint(checkpoint)
        if found is None:
            raise BadInputError(f"--resume: no readable checkpoint in {resume}")
        return found
    if not checkpoint.is_file():
        raise BadInputError(f"--resume: no checkpoint at {resume}")
    try:
        return checkpoint, read_checkpoint(checkpoint)
    except ValueError as error:
        raise BadInputError(f"--resume: {error}") from error


def resume_run(config: TrainConfig) -> Path:
    """Continue the run of the checkpoint ``config.resume`` exactly, with the options it was started with (only
    :data:`DISPLAY_OPTIONS` may be given anew; the others must keep their defaults or the run's values); returns the
    model path."""
    if config.resume is None:
        raise ValueError("config.resume must name the checkpoint (or run folder) to resume")
    checkpoint, payload = _checkpoint_to_resume(config.resume)
    stored = stored_config(payload)
    # Compared as the command line gives them (lists), so that the message shows the values as the user wrote them.
    given, recorded, defaults = config.as_options(), stored.as_options(), TrainConfig().as_options()
    differing = [
        f"{name} (the run's {recorded[name]!r}, given {value!r})"
        for name, value in given.items()
        if name not in DISPLAY_OPTIONS and value != defaults[name] and value != recorded[name]
    ]
    if differing:
        raise BadInputError(
            f"--resume continues a run with the options it was started with; these differ: {'; '.join(differing)}. "
            "Resume without them, or start a new run from its weights with -i"
        )
    print(f"Resuming {checkpoint}")
    resumed = replace(stored, **{name: getattr(config, name) for name in DISPLAY_OPTIONS})
    return train(resumed, checkpoint.parent, payload)


def _save_interrupted(model: Any, folder: Path, env_id: str) -> None:
    """Keep what an interrupted run has learnt, beside its checkpoints, and say how to go on."""
    # Not <env>.zip: a folder with its final model counts as finished and would not be resumed.
    path = folder / f"{env_id}_interrupted.zip"
    with atomic_write(path) as file:
        model.save(file)  # a binary file object, as SB3 accepts
    checkpoints = checkpoints_newest_first(folder)
    if checkpoints:
        how = f"continue from its latest checkpoint ({checkpoints[0].name}) with: plastic-rl train --resume {folder}"
    else:
        how = "no checkpoint was written yet (--save-freq), so it cannot be resumed"
    print(f"Interrupted at step {model.num_timesteps:,}: saved {path}; {how}", file=sys.stderr)


def train_run(run_folder: str | Path, config: TrainConfig) -> Path:
    """Train one run into exactly ``run_folder``, resuming it from its latest checkpoint if it has one.

    Parameters
    ----------
    run_folder : the run's folder (created if needed). If it holds the final model, nothing is trained; if it
        holds checkpoints, training continues exactly from the latest readable one; otherwise it starts afresh.
    config : the run, e.g. ``TrainConfig(policy="rnn", seed=3, n_timesteps=200_000, threads=1, save_freq=50_000,
        no_progress_bar=True)`` (its ``log_folder`` is not used, its ``resume`` must be None). A folder's checkpoint
        must have been written with the same options (display options aside).

    Returns
    -------
    The path of the final model, ``run_folder/<env>.zip``.
    """
    if config.resume is not None:
        raise ValueError("config.resume must be None: train_run resumes from run_folder's checkpoints itself")
    folder = Path(run_folder)
    model_path = folder / f"{config.env}.zip"
    if model_path.is_file():
        return model_path
    found = newest_readable_checkpoint(folder)
    payload = None if found is None else found[1]
    if payload is not None:
        stored = stored_config(payload)
        differing = sorted(
            field.name
            for field in fields(TrainConfig)
            if field.name not in DISPLAY_OPTIONS and getattr(stored, field.name) != getattr(config, field.name)
        )
        if differing:
            raise ValueError(
                f"run_folder {folder} holds a run with other options ({', '.join(differing)}); "
                "give its own options or another folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    return train(config, folder, payload)


def run_hyperparameters(config: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's hyperparameters (its entry of the file, ``-params`` over it, ``--env-kwargs``, ``n_envs`` and
    ``n_timesteps`` resolved) and the ``-params`` as applied; a ``ValueError`` names a bad option."""
    check_device("--device", config.device)
    check_env_id(config.env)
    if config.tensorboard_log:
        check_utf8_path("--tensorboard-log", config.tensorboard_log)
    hyperparameters = hyperparameters_for_policy(config.algo, config.env, config.policy, config.hyperparams_set)
    overrides = parse_key_values(config.hyperparams, "-params")
    for key in ("env_kwargs", "policy_kwargs"):
        # A dict given with -params completes the file's dict rather than replacing it.
        if isinstance(overrides.get(key), dict):
            overrides[key] = {**(hyperparameters.get(key) or {}), **overrides[key]}
    hyperparameters.update(overrides)
    for key in ("env_kwargs", "policy_kwargs"):
        if not isinstance(hyperparameters.get(key) or {}, dict):
            raise ValueError(f"{key} must be a mapping such as {{name: value}}; got {hyperparameters[key]!r}")
    hyperparameters["env_kwargs"] = {
        **(hyperparameters.get("env_kwargs") or {}),
        **parse_key_values(config.env_kwargs, "--env-kwargs"),
    }
    n_envs = config.n_envs if config.n_envs is not None else hyperparameters.get("n_envs", 1)
    n_timesteps = config.n_timesteps if config.n_timesteps is not None else hyperparameters.get("n_timesteps", 100_000)
    hyperparameters.update(n_envs=check_positive_int("n_envs", n_envs))
    hyperparameters.update(n_timesteps=check_positive_int("n_timesteps", n_timesteps))
    return hyperparameters, overrides


def check_run(config: TrainConfig) -> None:
    """Build the run's model on one env without training it, so that what would stop the run at its start (a policy
    that does not fit the env, a bad hyperparameter) raises now; a ``BadInputError`` names it."""
    with reported_as_bad_input():
        hyperparameters, _ = run_hyperparameters(config)
        env = make_training_env(config.env, 1, seed=config.seed, env_kwargs=hyperparameters["env_kwargs"])
        try:
            build_model(config.algo, config.policy, env, hyperparameters, config.seed, "cpu")
        finally:
            env.close()


def train(config: TrainConfig, folder: Path, checkpoint: dict[str, Any] | None = None) -> Path:
    """Train (or, from a checkpoint's contents, continue) the run of ``config`` in ``folder``; returns the model
    path."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    with reported_as_bad_input():
        hyperparameters, overrides = run_hyperparameters(config)
        env_kwargs, n_envs, n_timesteps = (hyperparameters[key] for key in ("env_kwargs", "n_envs", "n_timesteps"))
        # Before the envs are made (10**7 of them take minutes): their rollout alone must fit.
        n_steps = algorithm_arguments(hyperparameters, n_envs).get("n_steps", _default_n_steps(config.algo))
        n_steps = check_positive_int("n_steps", n_steps)
        check_fits(f"a rollout of n_steps={n_steps} x n_envs={n_envs}", rollout_bytes(n_steps, n_envs))
        env = make_training_env(
            config.env, n_envs, seed=config.seed, env_kwargs=env_kwargs, monitor_dir=folder, vec_env=config.vec_env
        )
    eval_callback = None
    if config.eval_freq is not None:
        eval_env = make_training_env(config.env, 1, seed=config.seed + 10_000, env_kwargs=env_kwargs)
        # Sampled actions: the trained policy of a meta-learner explores within the episode by sampling.
        eval_callback = EvalCallback(
            eval_env,
            n_eval_episodes=config.eval_episodes,
            eval_freq=max(config.eval_freq // n_envs, 1),
            best_model_save_path=str(folder),
            log_path=str(folder),
            deterministic=False,
        )
    load_kwargs: dict[str, Any] = dict(tensorboard_log=config.tensorboard_log, verbose=config.verbose)
    if checkpoint is not None:
        model = restore_checkpoint(
            checkpoint, algorithm_class(config.algo), env, config.device, eval_callback, **load_kwargs
        )
    elif config.trained_agent is not None:
        with reported_as_bad_input():  # a missing, damaged or code-carrying file is the user's input
            source: Any = config.trained_agent
            if str(source).endswith(".pt"):
                source = io.BytesIO(read_checkpoint(source)["model"])
            # As RL Zoo: the hyperparameters of this run (learning rate, ...) replace the saved model's.
            model = algorithm_class(config.algo).load(
                source,
                env=env,
                device=config.device,
                seed=config.seed,
                **load_kwargs,
                **algorithm_arguments(hyperparameters, n_envs),
            )
    else:
        with reported_as_bad_input():
            model = build_model(
                config.algo,
                config.policy,
                env,
                hyperparameters,
                config.seed,
                config.device,
                config.tensorboard_log,
                config.verbose,
            )
    if checkpoint is None:
        record = {
            "algo": config.algo,
            "env": config.env,
            "policy": config.policy,
            "seed": config.seed,
            "device": config.device,
            "hyperparameters": hyperparameters,
            "trained_agent": config.trained_agent,
            "command": " ".join(["plastic-rl", *sys.argv[1:]]),
        }
        write_run_config(folder, record)
        # RL Zoo's copies of the run's settings, so that its enjoy, record_video and plot_train read this run.
        zoo_policy, zoo_policy_kwargs = policy_settings(
            config.algo, config.policy, hyperparameters.get("policy_kwargs") or {}
        )
        zoo_arguments = {**config.as_options(), "env_kwargs": env_kwargs or None, "hyperparams": overrides or None}
        write_run_files(
            folder, config.env, {**hyperparameters, "policy_kwargs": zoo_policy_kwargs}, zoo_policy, zoo_arguments
        )

    callbacks: list = [ProgressCSVCallback(folder / "progress.csv")]
    if eval_callback is not None:
        callbacks.append(eval_callback)
    if config.heldout_freq is not None:
        callbacks.append(
            HeldOutEvaluationCallback(
                config.env,
                config.heldout_freq,
                config.heldout_episodes,
                {**env_kwargs, **parse_key_values(config.heldout_env_kwargs, "--heldout-env-kwargs")},
                deterministic=config.heldout_deterministic,
            )
        )
    if config.save_freq is not None:
        arguments = {**config.as_options(), "resume": None}
        callbacks.append(ResumeCheckpointCallback(folder, config.save_freq, arguments, eval_callback, KEPT_CHECKPOINTS))
    if checkpoint is not None and config.tensorboard_log:
        callbacks.append(OneEventFile())
    if config.video_freq is not None and config.tensorboard_log:
        callbacks.append(TraceVideoCallback(config.env, config.video_freq, env_kwargs, seed=config.seed + 30_000))
    if not config.no_progress_bar:
        callbacks.append(ProgressBar(n_timesteps))
    done = model.num_timesteps if checkpoint is not None else 0
    print(
        f"Training {config.algo} ({config.policy}) on {config.env} for {n_timesteps} steps with {n_envs} envs "
        f"-> {folder}" + (f" (from step {done})" if done else "")
    )
    try:
        model.learn(
            n_timesteps - done,
            callback=callbacks or None,
            log_interval=1,  # progress.csv: a row per update
            tb_log_name=f"{config.algo}_{config.env}_{config.policy}",
            reset_num_timesteps=checkpoint is None,
        )
    except TrainingDiverged as error:
        kept = f"{folder} keeps what was saved before it (checkpoints, best model); no final model was written"
        raise TrainingDiverged(f"{error}; {kept}") from error
    except KeyboardInterrupt:
        _save_interrupted(model, folder, config.env)
        raise
    model_path = folder / f"{config.env}.zip"
    with atomic_write(model_path) as file:
        model.save(file)  # type: ignore[arg-type]  # a binary file object, as SB3 accepts
    print(f"Saved {model_path}")
    curve = write_learning_curve(folder, title=f"{config.algo} ({config.policy}) on {config.env}")
    if curve is not None:
        print(f"Saved {curve}")
    env.close()

    if config.compare_random:
        results = compare_with_random(model, config.env, env_kwargs, config.compare_episodes)
        print(format_table(results))
        write_results(results, folder / "evaluation.json", {"model": str(model_path), "env_kwargs": env_kwargs})
        log_summary(model.logger, results[0], model.num_timesteps)
    return model_path
