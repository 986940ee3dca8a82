"""PlasticA2C / PlasticPPO and the recurrent policies."""

from __future__ import annotations

import warnings
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import SubprocVecEnv

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import PlasticA2C, PlasticPPO
from plastic_rl.core import fused
from plastic_rl.core.rules import get_rule

TINY_MAZE = dict(size=5, episode_length=10, observe_previous_action=True)
POLICY_CASES = [
    ("PlasticRecurrentPolicy", dict(hidden_size=8, plasticity="full")),
    ("PlasticRecurrentPolicy", dict(hidden_size=8, plasticity="shared", rule="oja")),
    ("PlasticRecurrentPolicy", dict(hidden_size=8, plasticity="none")),
    ("LstmPolicy", dict(hidden_size=8)),
    ("PlasticRecurrentPolicy", dict(hidden_size=8, rule="retroneuromod", trace_clip=1.0)),  # a three-part state
]


class CueRecallEnv(gym.Env):
    """A cue (one of two) is shown at the first step only; after a delay, a go signal asks which it was.

    Observations ``[cue_0, cue_1, go]``; reward 1 for naming the cue at the go step, else 0. A policy
    without memory scores 0.5 on average.
    """

    def __init__(self, delay: int = 3) -> None:
        self.delay = delay
        self.observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue, self.step_count = int(self.np_random.integers(2)), 0
        return np.eye(3, dtype=np.float32)[self.cue], {}

    def step(self, action):
        self.step_count += 1
        if self.step_count <= self.delay:
            return np.eye(3, dtype=np.float32)[2] * (self.step_count == self.delay), 0.0, False, False, {}
        return np.zeros(3, np.float32), float(action == self.cue), True, False, {}


def tiny_maze(n_envs: int = 2, seed: int = 0, **overrides):
    return make_vec_env("PlasticMaze-v0", n_envs=n_envs, seed=seed, env_kwargs={**TINY_MAZE, **overrides})


@pytest.mark.parametrize("policy, policy_kwargs", POLICY_CASES)
def test_rerun_from_snapshot_reproduces_the_rollout(policy, policy_kwargs):
    # n_steps (7) does not divide the episode length (10): the second rollout starts mid-episode, from
    # a snapshot of a non-initial state, and an episode starts inside it.
    model = PlasticA2C(policy, tiny_maze(), n_steps=7, policy_kwargs=policy_kwargs, seed=1)
    model.learn(7)
    buffer = model.rollout_buffer
    with pytest.warns(UserWarning, match="truncated BPTT"):
        model.collect_rollouts(model.env, model._init_callback(None), buffer, model.n_steps)
    assert buffer.episode_starts[3].all() and not buffer.episode_starts[0].any()
    assert np.abs(model._rollout_initial_state[0].numpy()).max() > 0
    batch = model._stored_sequences()
    with torch.no_grad():
        values, log_prob, _, _ = model.policy.evaluate_actions(
            batch["observations"], batch["actions"], model._rollout_initial_state, batch["episode_starts"]
        )
    np.testing.assert_allclose(values.numpy(), buffer.values.flatten(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_prob.numpy(), buffer.log_probs.flatten(), rtol=1e-4, atol=1e-5)


def test_one_snapshot_per_rollout_and_no_state_in_saved_files(tmp_path):
    model = PlasticA2C("PlasticRecurrentPolicy", tiny_maze(), n_steps=10, policy_kwargs=dict(hidden_size=8))
    model.learn(20)
    snapshot = model._rollout_initial_state
    assert len(snapshot) == 2 and snapshot[1].shape == (2, 8, 8) and not snapshot[1].requires_grad
    assert not any(name.startswith("_") for name, _ in model.policy.named_buffers())
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        data = archive.read("data").decode()
    assert "_last_recurrent_state" not in data and "_rollout_initial_state" not in data


@pytest.mark.parametrize("policy, policy_kwargs", POLICY_CASES)
def test_predict_resets_the_state_at_episode_starts(policy, policy_kwargs):
    model = PlasticA2C(policy, tiny_maze(), n_steps=10, policy_kwargs=policy_kwargs)
    obs = model.env.reset()
    no_start = np.zeros(2, dtype=bool)
    _, fresh = model.predict(obs, state=None, episode_start=np.ones(2, dtype=bool))
    _, carried = model.predict(obs, state=fresh, episode_start=no_start)
    _, continued = model.predict(obs, state=carried, episode_start=no_start)
    _, restarted = model.predict(obs, state=carried, episode_start=np.array([True, False]))
    for part in range(len(fresh)):
        assert isinstance(restarted[part], np.ndarray)
        np.testing.assert_allclose(restarted[part][0], fresh[part][0], atol=1e-6)
        np.testing.assert_allclose(restarted[part][1], continued[part][1], atol=1e-6)
        assert not np.allclose(continued[part][0], fresh[part][0])
    with pytest.raises(ValueError, match="state must be"):
        model.predict(obs, state=(fresh[0][:1],), episode_start=no_start)


def test_save_load_round_trip_into_a_different_number_of_envs(tmp_path):
    model = PlasticA2C("PlasticRecurrentPolicy", tiny_maze(), n_steps=10, policy_kwargs=dict(hidden_size=8), seed=3)
    model.learn(20)
    obs = model.env.reset()
    starts = np.ones(2, dtype=bool)
    actions, state = model.predict(obs, episode_start=starts, deterministic=True)
    model.save(tmp_path / "model")
    loaded = PlasticA2C.load(tmp_path / "model", env=tiny_maze(n_envs=3))
    loaded_actions, loaded_state = loaded.predict(obs, episode_start=starts, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)
    for part, loaded_part in zip(state, loaded_state, strict=True):
        np.testing.assert_allclose(part, loaded_part)
    assert loaded.policy.plasticity == "full" and loaded.policy.hidden_size == 8
    loaded.learn(30)
    assert loaded._last_recurrent_state[0].shape == (3, 8)


def test_evaluate_policy_and_subproc_vec_env():
    # "module:id" makes the worker processes import plastic_rl, which registers the env there.
    env = make_vec_env("plastic_rl:PlasticMaze-v0", n_envs=2, env_kwargs=TINY_MAZE, vec_env_cls=SubprocVecEnv)
    try:
        model = PlasticPPO("LstmPolicy", env, n_steps=10, n_epochs=2, policy_kwargs=dict(hidden_size=8))
        model.learn(40)
        mean_reward, _ = evaluate_policy(model, env, n_eval_episodes=4, deterministic=False)
    finally:
        env.close()
    assert np.isfinite(mean_reward)


@pytest.mark.filterwarnings("ignore:episodes do not line up")
def test_continuous_actions_and_plasticity_statistics():
    model = PlasticA2C("PlasticRecurrentPolicy", "Pendulum-v1", n_steps=20, policy_kwargs=dict(hidden_size=8))
    model.learn(40)
    action, _ = model.predict(model.env.reset())
    assert action.shape == (1, 1) and np.all(np.abs(action) <= 2.0)
    logged = model.logger.name_to_value
    assert {"plasticity/eta", "plasticity/mean_abs_alpha", "plasticity/trace_norm"} <= set(logged)
    assert logged["plasticity/trace_norm"] > 0
    state = model._last_recurrent_state
    core = model.policy.core
    expected = torch.linalg.matrix_norm(core.plasticity_coefficient * state[1]).mean() / core.weight.norm()
    assert logged["plasticity/plastic_weight_ratio"] == pytest.approx(expected.item(), rel=1e-5)


def test_training_warns_once_when_plasticity_has_switched_itself_off(recwarn):
    env = make_vec_env("PlasticMaze-v0", n_envs=2, env_kwargs=dict(size=5, episode_length=10))
    model = PlasticA2C("PlasticRecurrentPolicy", env, n_steps=10, learning_rate=1e-3, policy_kwargs=dict(hidden_size=8))
    model.learn(180)  # 9 updates with alpha at its start: plastic
    assert not [w for w in recwarn if "switched itself off" in str(w.message)]
    with torch.no_grad():
        model.policy.core.eta_raw.fill_(-40.0)  # eta ~ 4e-18: the trace stays ~0, as the clamp at 0 once left it
    with pytest.warns(UserWarning, match=r"plasticity has switched itself off: for 10 updates in a row"):
        model.learn(200, reset_num_timesteps=False)
    recwarn.clear()
    model.learn(200, reset_num_timesteps=False)  # once per model
    assert not [w for w in recwarn if "switched itself off" in str(w.message)]


def test_ppo_with_one_epoch_and_no_normalisation_is_a2c():
    # At the first epoch the clipped objective has the same gradient as A2C's policy-gradient loss.
    params = []
    for algorithm, extra in [(PlasticA2C, {}), (PlasticPPO, dict(n_epochs=1, normalize_advantage=False))]:
        model = algorithm(
            "PlasticRecurrentPolicy", tiny_maze(), n_steps=10, policy_kwargs=dict(hidden_size=8), seed=5, **extra
        )
        model.learn(20)
        params.append(torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach())
    torch.testing.assert_close(params[0], params[1])


def test_episode_aligned_rollouts_do_not_warn():
    model = PlasticA2C("PlasticRecurrentPolicy", tiny_maze(), n_steps=10, policy_kwargs=dict(hidden_size=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.learn(40)


@pytest.mark.parametrize(
    "policy, policy_kwargs, match",
    [
        ("MlpPolicy", {}, "policy must be one of"),
        ("PlasticRecurrentPolicy", dict(plasticity="partial"), "plasticity must be one of"),
        ("PlasticRecurrentPolicy", dict(rule="stdp"), "rule must be one of"),
        ("PlasticRecurrentPolicy", dict(hidden_size=0), "hidden_size must be a positive integer"),
        ("PlasticRecurrentPolicy", dict(trace_clip=-1.0), "trace_clip must be a finite number > 0"),
        ("LstmPolicy", dict(hidden_size=2.5), "hidden_size must be a positive integer"),
    ],
)
def test_bad_policy_names_and_kwargs_give_clear_errors(policy, policy_kwargs, match):
    with pytest.raises(ValueError, match=match):
        PlasticA2C(policy, tiny_maze(n_envs=1), policy_kwargs=policy_kwargs)


def test_unknown_policy_kwarg_is_rejected():
    with pytest.raises(TypeError, match="plasticty"):
        PlasticA2C("PlasticRecurrentPolicy", tiny_maze(n_envs=1), policy_kwargs=dict(plasticty="full"))


@pytest.mark.parametrize("policy, policy_kwargs", [POLICY_CASES[0], POLICY_CASES[3]])
def test_learns_a_task_that_needs_memory(policy, policy_kwargs):
    env = make_vec_env(CueRecallEnv, n_envs=16, seed=0)
    model = PlasticA2C(
        policy, env, n_steps=4, learning_rate=1e-2, ent_coef=0.01, vf_coef=0.5, policy_kwargs=policy_kwargs, seed=0
    )
    untrained, _ = evaluate_policy(model, env, n_eval_episodes=200, deterministic=True)
    model.learn(6400)
    trained, _ = evaluate_policy(model, env, n_eval_episodes=200, deterministic=True)
    # Without memory the best expected score is 0.5, which is also a random policy's.
    assert untrained < 0.7
    assert trained > 0.9


def test_optimizer_is_adam_with_the_papers_eps_or_rmsprop():
    adam = PlasticA2C("PlasticRecurrentPolicy", tiny_maze(n_envs=1), policy_kwargs=dict(hidden_size=8))
    assert isinstance(adam.policy.optimizer, torch.optim.Adam)
    assert adam.policy.optimizer.defaults["eps"] == 1e-4
    rmsprop = PlasticA2C("LstmPolicy", tiny_maze(n_envs=1), use_rms_prop=True, policy_kwargs=dict(hidden_size=8))
    assert isinstance(rmsprop.policy.optimizer, torch.optim.RMSprop)


@pytest.mark.parametrize(
    "policy, policy_kwargs, n_steps",
    [(*POLICY_CASES[0], 10), (*POLICY_CASES[0], 7), (*POLICY_CASES[1], 10), (*POLICY_CASES[3], 10)],
)
def test_lean_rollouts_on_the_batched_maze_train_as_the_previous_path(policy, policy_kwargs, n_steps):
    """The lean rollout step and the batched maze play the per-step reference's episodes and train to its parameters.

    The LSTM's to the bit. A plastic core's train() differentiates the forward its rollout recorded, whose input
    projection ran one step at a time, where the reference re-runs it on the whole rollout at once: the same sums,
    grouped differently by the matrix product, so its parameters agree to rounding. ``n_steps`` 7 puts episode starts
    inside rollouts (episodes of 10 steps).
    """
    from plastic_rl.agents.make_env import make_training_env
    from plastic_rl.benchmarks.a2c_runs import ReferencePlasticA2C

    parameters, episodes = [], []
    for algorithm, env in [
        (PlasticA2C, make_training_env("PlasticMaze-v0", 3, seed=5, env_kwargs=TINY_MAZE)),
        (ReferencePlasticA2C, tiny_maze(3, seed=5)),
    ]:
        model = algorithm(policy, env, n_steps=n_steps, policy_kwargs=policy_kwargs, seed=1, device="cpu")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "episodes do not line up", UserWarning)
            model.learn(3 * 3 * n_steps)
        parameters.append(torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach())
        episodes.append([(info["r"], info["l"]) for info in model.ep_info_buffer])
    assert episodes[0] == episodes[1] and len(episodes[0]) >= 6
    tolerance = 0 if policy == "LstmPolicy" else 1e-6
    torch.testing.assert_close(parameters[0], parameters[1], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("policy, policy_kwargs", POLICY_CASES)
def test_train_differentiates_the_rollouts_recording_where_the_core_keeps_one(policy, policy_kwargs, monkeypatch):
    model = PlasticA2C(policy, tiny_maze(), n_steps=10, policy_kwargs=policy_kwargs, seed=1)
    model.learn(10)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)
    recording = model._recorded_rollout
    kernel_rule = policy == "PlasticRecurrentPolicy" and get_rule(policy_kwargs.get("rule", "hebb")).supports("cpp")
    assert (recording is not None) == (kernel_rule and fused.cpp_available())
    if recording is None:
        return
    differentiated = []
    original = recording.buffers_for_backward
    monkeypatch.setattr(recording, "buffers_for_backward", lambda inputs: differentiated.append(1) or original(inputs))
    model.train()
    assert differentiated == [1] and model._recorded_rollout is None


def test_direct_categorical_equals_sb3_distribution():
    env = tiny_maze()
    policy = PlasticA2C("PlasticRecurrentPolicy", env, policy_kwargs=dict(hidden_size=8), seed=0).policy
    obs = torch.randn(5, 2, env.observation_space.shape[0])
    starts = torch.zeros(5, 2, dtype=torch.bool)
    actions = torch.randint(4, (10,))
    values, log_prob, entropy, _ = policy.evaluate_actions(obs, actions, policy.initial_state(2), starts)
    latent, _ = policy.unroll(obs, policy.initial_state(2), starts)
    distribution = policy._distribution(latent.reshape(10, -1))
    # log_softmax where torch's Categorical subtracts a logsumexp: the same to rounding, not to the bit.
    torch.testing.assert_close(log_prob, distribution.log_prob(actions), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(entropy, distribution.entropy(), rtol=1e-6, atol=1e-7)


def test_tuple_observations_are_refused_at_construction():
    class TupleEnv(CueRecallEnv):
        def __init__(self) -> None:
            super().__init__()
            self.observation_space = spaces.Tuple((spaces.Box(0, 1, (2,)), spaces.Discrete(2)))

    with pytest.raises(ValueError, match=r"observation_space must be one of Box, Discrete.*Dict; got Tuple"):
        PlasticA2C("PlasticRecurrentPolicy", TupleEnv())
    with pytest.raises(ValueError, match="observation_space must be one of"):
        PlasticPPO("LstmPolicy", TupleEnv())


def test_the_lstm_leaves_out_plasticity_keys_that_a_study_passes_to_every_condition():
    from plastic_rl.agents.hyperparameters import policy_settings

    shared = {"hidden_size": 16, "rule": "oja", "trace_clip": 1.0}
    with pytest.warns(UserWarning, match="policy 'lstm' has no plasticity: ignoring policy_kwargs rule, trace_clip"):
        assert policy_settings("plastic_a2c", "lstm", shared) == ("LstmPolicy", {"hidden_size": 16})
    with pytest.warns(UserWarning, match="ignoring policy_kwargs rule"):
        _, ppo_kwargs = policy_settings("recurrent_ppo", "lstm", shared)
    assert ppo_kwargs["lstm_hidden_size"] == 16 and "rule" not in ppo_kwargs
    assert policy_settings("plastic_a2c", "plastic", shared)[1] == {**shared, "plasticity": "full"}


def test_the_rollouts_categorical_sample_draws_what_torch_multinomial_draws():
    """The same draws from the same generator state, rows with impossible actions included (never drawn)."""
    from plastic_rl.agents.policies import sample_categorical

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 5, generator=generator) * 3
    logits[::7, 2] = -float("inf")
    probs = logits.log_softmax(dim=-1).exp()
    torch.manual_seed(1)
    expected = torch.cat([torch.multinomial(probs[k : k + 50], 1, True)[:, 0] for k in range(0, 200, 50)])
    torch.manual_seed(1)
    actual = torch.cat([sample_categorical(probs[k : k + 50]) for k in range(0, 200, 50)])
    assert torch.equal(actual, expected)
    assert not bool((actual[::7] == 2).any())
    assert len(set(actual.tolist())) == 5  # not one action always


@pytest.mark.parametrize("failure", [RuntimeError("a callback failed"), KeyboardInterrupt()])
def test_an_exception_mid_rollout_leaves_the_state_a_stop_there_leaves_and_torchs_threads_as_they_were(failure):
    """A rollout ended by an exception (a callback's here) leaves the model's state where a callback's stop at the
    same step leaves it (its background product waited for), and torch's thread count restored."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EndAtStep(BaseCallback):
        def __init__(self, failure: BaseException | None) -> None:
            super().__init__()
            self.failure, self.overlapped = failure, None

        def _on_step(self) -> bool:
            if self.n_calls < 4:
                return True
            self.overlapped = self.locals["recording"].overlapped
            if self.failure is not None:
                raise self.failure
            return False

    (policy, policy_kwargs), states, threads = POLICY_CASES[0], [], torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for ending in [failure, None]:
            model = PlasticA2C(policy, tiny_maze(), n_steps=10, policy_kwargs=policy_kwargs, seed=1)
            callback = EndAtStep(ending)
            if ending is None:
                model.learn(20, callback=callback)
            else:
                with pytest.raises(type(ending)):
                    model.learn(20, callback=callback)
            assert callback.overlapped and model._recorded_rollout is None and torch.get_num_threads() == 2
            states.append(model._last_recurrent_state)
    finally:
        torch.set_num_threads(threads)
    for raised, stopped in zip(*states, strict=True):
        assert torch.equal(raised, stopped)


class _DictCueEnv(gym.Env):
    """A tiny Dict-observation task: a cue shown at the first step, to be named at the last (needs memory)."""

    def __init__(self, length: int = 4) -> None:
        self.length = length
        self.observation_space = gym.spaces.Dict(
            {"cue": gym.spaces.Box(0.0, 1.0, (2,), np.float32), "time": gym.spaces.Box(0.0, 1.0, (1,), np.float32)}
        )
        self.action_space = gym.spaces.Discrete(2)

    def _observation(self) -> dict:
        cue = np.eye(2, dtype=np.float32)[self._cue] if self._step == 0 else np.zeros(2, np.float32)
        return {"cue": cue, "time": np.array([self._step / self.length], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._cue, self._step = int(self.np_random.integers(2)), 0
        return self._observation(), {}

    def step(self, action):
        self._step += 1
        done = self._step == self.length
        reward = float(done and int(action) == self._cue)
        return self._observation(), reward, done, False, {}


@pytest.mark.filterwarnings("ignore:episodes do not line up")
def test_a_dict_observation_env_trains_saves_loads_and_predicts_with_state(tmp_path):
    from stable_baselines3.common.env_checker import check_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.torch_layers import CombinedExtractor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    check_env(_DictCueEnv())
    env = VecNormalize(DummyVecEnv([_DictCueEnv] * 4), norm_reward=False)
    model = PlasticA2C("PlasticRecurrentPolicy", env, n_steps=4, policy_kwargs={"hidden_size": 8}, seed=0)
    assert isinstance(model.policy.features_extractor, CombinedExtractor)  # as SB3's MultiInputPolicy
    model.learn(64)
    model.save(tmp_path / "dict")
    loaded = PlasticA2C.load(tmp_path / "dict")
    observation = env.reset()
    state, starts = None, np.ones(4, dtype=bool)
    for _ in range(4):
        actions, state = loaded.predict(observation, state=state, episode_start=starts)
        observation, _, starts, _ = env.step(actions)
    assert actions.shape == (4,) and [part.shape[0] for part in state] == [4] * len(state)
    single = {name: part[0] for name, part in observation.items()}  # one env's observation, not a batch
    assert loaded.predict(single)[0].shape == ()
    mean, _ = evaluate_policy(loaded, env, n_eval_episodes=4)
    assert 0.0 <= mean <= 1.0
