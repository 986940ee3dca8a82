"""Omniglot: the reader and its cache, the splits, PlasticOmniglot-v0, and the supervised task (tiny synthetic data)."""

import io
import json
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils import seeding
from PIL import Image

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.cli import main
from plastic_rl.data import DataError
from plastic_rl.data import omniglot as data
from plastic_rl.envs.omniglot import OmniglotClasses, draw_episode, sample_omniglot_episodes
from plastic_rl.supervised import SupervisedTrainer
from plastic_rl.supervised.omniglot import OmniglotTask, episode_hits, evaluate

ALPHABETS = {"images_background": ("Alpha", "Beta"), "images_evaluation": ("Gamma",)}
CHARACTERS_PER_ALPHABET = 6
DRAWINGS = 4


def _drawing(character: int, drawing: int) -> bytes:
    """A 105x105 PNG in Omniglot's style (black strokes on white): a character's 7x7 block pattern, a few flips."""
    pattern = np.random.default_rng([character]).random((7, 7)) < 0.4
    noisy = pattern ^ (np.random.default_rng([character, drawing]).random((7, 7)) < 0.04)
    pixels = np.where(np.kron(noisy, np.ones((15, 15), dtype=bool)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tiny_omniglot(data_dir, extracted: bool = False) -> None:
    """Both official archives in their layout (<top>/<Alphabet>/characterNN/NNNN_DD.png), 18 characters x 4 drawings."""
    folder = data_dir / "omniglot"
    folder.mkdir(parents=True, exist_ok=True)
    character = 0
    for top, alphabets in ALPHABETS.items():
        members = {}
        for alphabet in alphabets:
            for number in range(1, CHARACTERS_PER_ALPHABET + 1):
                character += 1
                for drawing in range(1, DRAWINGS + 1):
                    name = f"{top}/{alphabet}/character{number:02d}/{character:04d}_{drawing:02d}.png"
                    members[name] = _drawing(character, drawing)
        if extracted:
            for name, payload in members.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(payload)
        else:
            with zipfile.ZipFile(folder / f"{top}.zip", "w") as archive:
                for name, payload in members.items():
                    archive.writestr(name, payload)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASTIC_RL_CACHE", str(tmp_path / "cache"))
    write_tiny_omniglot(tmp_path / "data")
    return tmp_path / "data"


def tiny_task(data_dir, **options) -> OmniglotTask:
    return OmniglotTask(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir), **options)


def test_reader_decodes_every_drawing_at_31x31_with_ink_high(data_dir):
    images = data.load_images(data_dir)
    assert images.images.shape == (18, DRAWINGS, 31, 31) and images.images.dtype == np.uint8
    assert images.characters[0] == "Alpha/character01" and images.characters[-1] == "Gamma/character06"
    assert list(images.characters) == sorted(images.characters)
    # A block that is ink in the 105x105 drawing (its center pixel black) is high at 31x31.
    source = np.asarray(Image.open(io.BytesIO(_drawing(1, 1))))
    assert (images.images[0, 0] > 127).mean() == pytest.approx((source < 128).mean(), abs=0.1)


def test_extracted_folders_read_like_the_zips(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASTIC_RL_CACHE", str(tmp_path / "cache-zip"))
    write_tiny_omniglot(tmp_path / "zipped")
    zipped = data.load_images(tmp_path / "zipped")
    monkeypatch.setenv("PLASTIC_RL_CACHE", str(tmp_path / "cache-folder"))
    write_tiny_omniglot(tmp_path / "folders", extracted=True)
    folders = data.load_images(tmp_path / "folders")
    assert folders.characters == zipped.characters
    np.testing.assert_array_equal(folders.images, zipped.images)


def test_cache_is_reused_rebuilt_when_the_source_changes_and_never_trusted_when_corrupt(data_dir, monkeypatch, capsys):
    first = data.load_images(data_dir)
    cache = data._cache_path()
    assert cache.is_file()
    assert f"preprocessing Omniglot into {cache} (once" in capsys.readouterr().err  # the wait is announced
    builds = []
    real_build = data._build
    monkeypatch.setattr(data, "_build", lambda sources: builds.append(1) or real_build(sources))
    np.testing.assert_array_equal(data.load_images(data_dir).images, first.images)
    assert builds == [] and capsys.readouterr().err == ""  # read from the cache, silently
    reads = []
    real_read = data._read_cache
    monkeypatch.setattr(data, "_read_cache", lambda *args: reads.append(1) or real_read(*args))
    again = data.load_images(data_dir)  # the envs of a VecEnv share one read: the same read-only array
    assert reads == [] and again is data.load_images(data_dir) and not again.images.flags.writeable
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated
    np.testing.assert_array_equal(data.load_images(data_dir).images, first.images)
    assert builds == [1]
    with zipfile.ZipFile(data_dir / "omniglot" / "images_evaluation.zip", "a") as archive:
        archive.writestr("images_evaluation/Gamma/character07/9999_01.png", _drawing(99, 1))
        for drawing in range(2, DRAWINGS + 1):
            archive.writestr(f"images_evaluation/Gamma/character07/9999_{drawing:02d}.png", _drawing(99, drawing))
    assert len(data.load_images(data_dir).characters) == 19
    assert builds == [1, 1]


def test_missing_and_corrupt_files_say_which_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASTIC_RL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"images_background\.zip not found.*plastic-rl download omniglot"):
        data.load_images(tmp_path / "nowhere")
    write_tiny_omniglot(tmp_path)
    corrupt = tmp_path / "omniglot" / "images_evaluation.zip"
    corrupt.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"images_evaluation\.zip is unreadable or corrupt"):
        data.load_images(tmp_path)


def test_download_command_is_registered_and_skips_present_files(data_dir, capsys):
    assert main(["download", "omniglot", "--data-dir", str(data_dir)]) == 0  # both files present: nothing fetched
    assert "ready" in capsys.readouterr().out


def test_paper_split_holds_each_character_in_one_part_and_depends_on_its_seed(data_dir):
    images = data.load_images(data_dir)
    split = data.make_split("paper", images, seed=3, test_characters=5, validation_characters=5)
    parts = [set(split.parts[part]) for part in data.PARTS]
    assert [len(part) for part in parts] == [8, 5, 5]
    assert set.union(*parts) == set(images.characters) and sum(map(len, parts)) == len(images.characters)
    assert data.make_split("paper", images, seed=3, test_characters=5, validation_characters=5) == split
    other_seeds = [data.make_split("paper", images, seed, 5, 5).parts["test"] for seed in range(4, 8)]
    assert any(test != split.parts["test"] for test in other_seeds)
    # Rotations make classes of a character's own part only: a test character never reaches training.
    train_rows, train_rotations = split.classes("train", images)
    test_rows, _ = split.classes("test", images)
    assert train_rotations is None and not set(train_rows) & set(test_rows)
    with pytest.raises(ValueError, match="test_characters"):
        data.make_split("paper", images, test_characters=9, validation_characters=9)


def test_vinyals_split_ships_disjoint_lists_with_every_rotation_a_class():
    split = data.OmniglotSplit.vinyals()
    sizes = {part: len(names) for part, names in split.parts.items()}
    assert sizes == {"train": 1028, "validation": 172, "test": 423}
    assert len(set().union(*split.parts.values())) == 1623
    fake = data.OmniglotImages(np.zeros((1623, 2, 31, 31), np.uint8), tuple(sorted(set().union(*split.parts.values()))))
    rows, rotations = split.classes("test", fake)
    assert len(rows) == 4 * 423 and sorted(set(rotations)) == [0, 1, 2, 3]
    train_rows, _ = split.classes("train", fake)
    assert not set(rows) & set(train_rows)


def test_episode_layout_labels_the_shown_drawings_and_not_the_query(data_dir):
    images = data.load_images(data_dir)
    split = data.make_split("paper", images, test_characters=5, validation_characters=5)
    classes = OmniglotClasses.of(images, split, "train")
    rng = np.random.default_rng(0)
    for ways, shots in ((5, 1), (3, 2)):
        episode = draw_episode(classes, ways, shots, rng)
        assert episode.images.shape == (ways * shots + 1, 31, 31) and episode.images.dtype == np.float32
        assert episode.labels[-1] == -1 and sorted(episode.labels[:-1]) == sorted(list(range(ways)) * shots)
        shown = episode.images[:-1][episode.labels[:-1] == episode.targets[0]]
        assert not any(np.array_equal(episode.images[-1], image) for image in shown)  # a new drawing
    with pytest.raises(ValueError, match="shots"):
        draw_episode(classes, 2, DRAWINGS, rng)
    with pytest.raises(ValueError, match="shots \\+ queries"):
        draw_episode(classes, 2, 1, rng, queries=DRAWINGS)


def test_several_queries_are_new_distinct_drawings_of_their_classes():
    # Each drawing is a constant image whose value names it (character * 20 + drawing), rotations included.
    characters, drawings = 6, 20
    ids = np.arange(characters * drawings, dtype=np.uint8).reshape(characters, drawings)
    classes = OmniglotClasses(np.broadcast_to(ids[..., None, None], (*ids.shape, 31, 31)), np.arange(characters), None)
    rng = np.random.default_rng(1)
    queried = []
    for _ in range(50):
        episode = draw_episode(classes, 3, 2, rng, queries=10)
        assert list(episode.labels[6:]) == [-1] * 10 and sorted(episode.labels[:6]) == [0, 0, 1, 1, 2, 2]
        shown_ids = np.rint(episode.images[:, 0, 0] * 255).astype(int)
        assert len(set(shown_ids)) == 16  # no drawing twice: the queries are new drawings, distinct
        character_of = {label: shown_ids[:6][episode.labels[:6] == label][0] // drawings for label in range(3)}
        assert all(shown_ids[6 + m] // drawings == character_of[target] for m, target in enumerate(episode.targets))
        queried += list(episode.targets)
    assert np.bincount(queried).min() > 100  # every class is queried (500 queries, about 167 each)


def test_env_passes_both_checkers_and_scores_only_the_query(data_dir):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    kwargs = dict(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir))
    env = gym.make("PlasticOmniglot-v0", **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    with pytest.warns(UserWarning, match="unconventional shape"):  # a 31x31 image; SB3 prefers 1-D or CHW
        sb3_check_env(env.unwrapped)
    observation, info = env.reset(seed=5)
    rewards = []
    for step in range(6):
        assert observation["label"].sum() == (1.0 if step < 5 else 0.0)
        observation, reward, terminated, truncated, info = env.step(info["target"])
        rewards.append(reward)
        assert terminated == (step == 5) and not truncated
    assert rewards == [0.0] * 5 + [1.0]


def test_batched_sampler_matches_successive_env_resets(data_dir):
    env = gym.make(
        "PlasticOmniglot-v0", split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir)
    )
    env.reset(seed=11)
    episodes = [env.unwrapped._episode]
    for _ in range(2):
        env.reset()
        episodes.append(env.unwrapped._episode)
    images, labels, targets = sample_omniglot_episodes(env.unwrapped.classes, 5, 1, seeding.np_random(11)[0], 3)
    for column, episode in enumerate(episodes):
        np.testing.assert_array_equal(images[:, column], episode.images)
        np.testing.assert_array_equal(labels[:, column], episode.labels)
        assert targets.shape == (1, 3) and targets[0, column] == episode.targets[0]


def test_paper_split_without_validation_characters_validates_on_training_classes(data_dir):
    task = OmniglotTask(split="paper", test_characters=5, validation_characters=0, data_dir=str(data_dir))
    assert len(task.split.parts["train"]) == 13 and task.split.parts["validation"] == ()
    assert task.sample_validation(2, np.random.default_rng(0)).inputs.shape == (6, 2, 961 + 5)
    with pytest.raises(ValueError, match="no validation characters"):
        task.sample_part("validation", 2, np.random.default_rng(0))


def test_task_refuses_a_split_other_than_the_models(data_dir):
    task = tiny_task(data_dir)
    config = task.config()
    assert config["digest"] and config["split"] == "paper"
    with pytest.raises(ValueError, match="not the one the model was trained with"):
        OmniglotTask(**{**config, "split_seed": config["split_seed"] + 1}).sample(1, np.random.default_rng(0))


@pytest.mark.parametrize("model_name", ["plastic", "prototypical"])
def test_a_short_training_run_on_a_tiny_alphabet_is_well_above_chance(data_dir, model_name):
    torch.manual_seed(0)
    task = tiny_task(data_dir)
    trainer = SupervisedTrainer(
        task, task.build_model(model_name), batch_size=8, learning_rate=3e-3, eval_interval=0, progress=False
    )
    trainer.train(25)
    scores = evaluate(trainer.model, task, part="validation", episodes=100)
    print(scores)
    assert scores["accuracy"] > 0.6  # chance: 0.2
    assert 0 < scores["ci95"] < 0.1


def test_linear_head_cannot_use_the_labels_and_no_fixed_weight_stays_zero(data_dir):
    task = tiny_task(data_dir)
    linear = task.build_model("linear")
    assert linear.output.plasticity_coefficient is None
    hebb_only = task.build_model("plastic", fixed_weight=False, embedding="conv4")
    trainer = SupervisedTrainer(task, hebb_only, batch_size=4, eval_interval=0, progress=False)
    trainer.train(2)
    assert torch.count_nonzero(hebb_only.output.weight) == 0


def test_supervised_and_evaluate_commands(data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["--data-dir", str(data_dir), "--split", "paper", "--test-characters", "5", "--validation-characters", "5"]
    arguments = ["supervised", "omniglot", "--steps", "3", "--batch-size", "2", "--eval-interval", "3", "--no-progress"]
    assert main([*arguments, "--run-dir", str(run_dir), "--threads", "1", *common]) == 0
    capsys.readouterr()
    out = tmp_path / "report.json"
    evaluate = ["evaluate", "omniglot", str(run_dir / "model.pt"), "--episodes", "20", "--out", str(out)]
    assert main([*evaluate, "--nearest-neighbour"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["part"] == "test" and report["head"]["episodes"] == 20 and "nearest_neighbour" in report
    # For people: one line per score, a percentage with its interval, no JSON.
    assert "5-way 1-shot, 20 episodes of the test classes" in printed and "{" not in printed
    assert f"plastic head       {report['head']['accuracy']:.1%} ± {report['head']['ci95']:.1%} (95% CI)" in printed
    assert main([*evaluate, "--ways", "3", "--shots", "2"]) == 0
    assert "3-way 2-shot" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert (report["ways"], report["shots"], report["queries"]) == (3, 2, 1)
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "omniglot", str(run_dir / "model.pt"), "--ways", "6"])
    assert stopped.value.code == 2
    assert "error: ways must be at most the 5 classes a plastic head was trained with; got 6" in capsys.readouterr().err
    # The nearest neighbour reads only the features: it scores 5-way episodes of a 3-way model; the head is skipped.
    assert main([*arguments, "--ways", "3", "--run-dir", str(tmp_path / "three"), "--threads", "1", *common]) == 0
    evaluate_three = ["evaluate", "omniglot", str(tmp_path / "three" / "model.pt"), "--episodes", "20"]
    assert main([*evaluate_three, "--out", str(out), "--ways", "5", "--nearest-neighbour"]) == 0
    assert "head not scored: ways must be at most the 3 classes" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert "head" not in report and report["nearest_neighbour"]["episodes"] == 20
    with pytest.raises(SystemExit) as exit_info:
        main(["supervised", "omniglot", "--ways", "1", "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "new")])
    assert exit_info.value.code == 2
    assert "plastic-rl supervised: error: ways must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # found from the data, before the run folder is made
        main(["supervised", "omniglot", "--queries", str(DRAWINGS), *common, "--run-dir", str(tmp_path / "new")])
    assert exit_info.value.code == 2 and not (tmp_path / "new").exists()
    assert "error: shots + queries must be at most the 4 drawings per character; got 1 + 4" in capsys.readouterr().err


def test_download_checks_the_published_md5_of_fresh_files(tmp_path, monkeypatch):
    import hashlib

    payloads = {url: f"archive at {url}".encode() for url, _ in data.ARCHIVES.values()}

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: Response(payloads[url]))
    with pytest.raises(DataError, match="did not match its published MD5"):
        data.download(tmp_path)
    assert not (tmp_path / "omniglot" / "images_background.zip").exists()
    published = {archive: (url, hashlib.md5(payloads[url]).hexdigest()) for archive, (url, _) in data.ARCHIVES.items()}
    monkeypatch.setattr(data, "ARCHIVES", published)
    data.download(tmp_path)
    assert (tmp_path / "omniglot" / "images_evaluation.zip").read_bytes() == payloads[published["images_evaluation"][0]]


@pytest.mark.parametrize("head", ["plastic", "prototypical"])
def test_queries_read_the_memory_of_the_shown_drawings_and_do_not_write_it(data_dir, head):
    torch.manual_seed(0)
    task = tiny_task(data_dir, queries=3)
    model = task.build_model(head, embedding="conv4").eval()
    episodes = task.sample(4, np.random.default_rng(0))
    assert episodes.inputs.shape[0] == 5 + 3 and episodes.mask[:, 0, 0].tolist() == [False] * 5 + [True] * 3
    assert torch.equal(episodes.targets[-3:].sum(-1), torch.ones(3, 4))
    together = model(episodes.inputs)
    for query in range(3):  # each query alone after the shown drawings: the paper's one-query episode
        alone = model(torch.cat([episodes.inputs[:5], episodes.inputs[5 + query : 6 + query]]))
        torch.testing.assert_close(together[5 + query], alone[-1])
    if head == "plastic":  # with one query, the same as the plain unroll of the paper's layer
        features = model.features(episodes.inputs[:6])
        unrolled, _ = model.output(features, teacher=episodes.inputs[:6, :, -5:])
        torch.testing.assert_close(model(episodes.inputs[:6]), unrolled)
        with pytest.raises(ValueError, match="labelled steps of every episode must come first"):
            model(torch.cat([episodes.inputs[5:6], episodes.inputs[:5]]))


def test_a_head_trained_on_more_ways_scores_fewer_on_its_first_output_units(data_dir):
    torch.manual_seed(0)
    task = tiny_task(data_dir)
    model = task.build_model("plastic", embedding="conv4").eval()
    three_way = task.like(ways=3, shots=2, queries=1)
    narrow = three_way.build_model("plastic", embedding="conv4").eval()  # the 5-way head's first 3 units, alone
    narrow.embedding.load_state_dict(model.embedding.state_dict())
    with torch.no_grad():
        narrow.output.weight.copy_(model.output.weight[:, :3])
        narrow.output.plasticity_coefficient.copy_(model.output.plasticity_coefficient[:, :3])
        narrow.output.eta_raw.copy_(model.output.eta_raw)
    hits = episode_hits(model, three_way, part="validation", episodes=60)
    assert np.array_equal(hits, episode_hits(narrow, three_way, part="validation", episodes=60))
    with pytest.raises(ValueError, match="ways must be at most the 3 classes a plastic head was trained with; got 5"):
        episode_hits(narrow, task, part="validation", episodes=1)
    prototypical = three_way.build_model("prototypical", embedding="conv4")  # no per-class units: any number
    assert episode_hits(prototypical, task, part="validation", episodes=10).shape == (10,)


def test_render_shows_the_drawing_its_label_and_after_the_query_the_answer(data_dir):
    from gymnasium.utils.env_checker import check_env

    kwargs = dict(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir))
    env = gym.make("PlasticOmniglot-v0", **kwargs, render_mode="rgb_array")
    check_env(env.unwrapped)
    observation, info = env.reset(seed=5)
    frame = env.render()
    assert frame.shape == (124, 124 + 8 + 5 * 24, 3)  # the 31 x 31 drawing at 4 pixels, 5 label cells of 24
    label = int(observation["label"].argmax())
    assert (frame[:24, 132 + 24 * label : 132 + 24 * (label + 1)] == 0).all()  # the given class, black
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = env.step((info["target"] + 1) % 5)  # a wrong answer
    rows = env.render()[:72, 132:]
    answer, right = rows[24:48:24, ::24, 0].ravel(), rows[48:72:24, ::24, 0].ravel()
    assert answer.argmin() == (info["target"] + 1) % 5 and right.argmin() == info["target"]


def test_the_omniglot_env_trains_with_plastic_a2c_through_the_dict_observation(data_dir, tmp_path):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from plastic_rl.agents import PlasticA2C

    kwargs = dict(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir))
    env = DummyVecEnv([lambda: gym.make("PlasticOmniglot-v0", **kwargs)] * 2)
    model = PlasticA2C("PlasticRecurrentPolicy", env, n_steps=6, policy_kwargs={"hidden_size": 16}, seed=0)
    model.learn(24)  # 5 labelled drawings and the query: one episode per rollout and env
    model.save(tmp_path / "omniglot")
    loaded = PlasticA2C.load(tmp_path / "omniglot")
    actions, state = loaded.predict(env.reset(), episode_start=np.ones(2, dtype=bool))
    assert actions.shape == (2,) and loaded.policy.core.plasticity == "full"


def test_the_image_key_extractor_embeds_the_drawing_and_trains_with_plastic_a2c(data_dir, tmp_path):
    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv

    from plastic_rl.agents import ImageKeyExtractor, PlasticA2C

    kwargs = dict(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir))
    env = gym.make("PlasticOmniglot-v0", **kwargs)
    extractor = ImageKeyExtractor(env.observation_space, channels=16)
    assert extractor.features_dim == 16 + 5  # the Conv-4 features of the 31x31 drawing, then the one-hot label
    observation = {key: torch.as_tensor(value)[None] for key, value in env.reset(seed=0)[0].items()}
    features = extractor.train()(observation)
    torch.testing.assert_close(features, extractor.eval()(observation), rtol=0, atol=0)  # rollout == its re-run
    with pytest.raises(ValueError, match="must be a Dict space with an 'image' key"):
        ImageKeyExtractor(gym.spaces.Box(0, 1, (3,)))
    vec_env = DummyVecEnv([lambda: gym.make("PlasticOmniglot-v0", **kwargs)] * 2)
    policy_kwargs = {"hidden_size": 16, "features_extractor_class": ImageKeyExtractor,
                     "features_extractor_kwargs": {"channels": 8}}  # fmt: skip
    model = PlasticA2C("PlasticRecurrentPolicy", vec_env, n_steps=6, policy_kwargs=policy_kwargs, seed=0)
    model.learn(24)
    model.save(tmp_path / "omniglot")
    loaded = PlasticA2C.load(tmp_path / "omniglot")  # the extractor class is named in plain data, not unpickled
    assert isinstance(loaded.policy.features_extractor, ImageKeyExtractor)


def test_the_lake_split_trains_on_the_background_alphabets_and_tests_on_the_evaluation_ones_upright(data_dir):
    images = data.load_images(data_dir)
    assert images.evaluation_alphabets == ("Gamma",)
    split = data.make_split("lake", images, seed=0, validation_characters=2)
    assert {name.split("/")[0] for name in split.parts["test"]} == {"Gamma"} and len(split.parts["test"]) == 6
    assert len(split.parts["train"]) == 10 and len(split.parts["validation"]) == 2
    assert not set(split.parts["train"]) & set(split.parts["validation"])  # no character in two parts
    rows, rotations = split.classes("test", images)
    assert len(rows) == 6 and rotations.tolist() == [0] * 6  # upright: the characters as drawn
    task = OmniglotTask(split="lake", ways=2, validation_characters=2, data_dir=str(data_dir))
    assert task.split.upright and task.split.as_dict()["upright"] is True


def test_a_users_split_file_is_parsed_checked_line_by_line_and_enforced_at_evaluation(data_dir, tmp_path):
    images = data.load_images(data_dir)
    good = tmp_path / "split.txt"
    good.write_text("# my split\n[train]\n" + "\n".join(f"Alpha/character0{n}" for n in range(1, 7))
                    + "\n[validation]\nBeta/character01\n[test]\n"
                    + "\n".join(f"Gamma/character0{n}" for n in range(1, 7)) + "\n")  # fmt: skip
    split = data.make_split(str(good), images)
    assert len(split.parts["train"]) == 6 and split.parts["validation"] == ("Beta/character01",) and split.upright
    folder = tmp_path / "lists"
    folder.mkdir()
    for name, part in (("train.txt", "Alpha"), ("test.txt", "Gamma")):
        rotated = [f"{part}/character01/rot{turns:03d}" for turns in (0, 90, 180, 270)]
        (folder / name).write_text("\n".join(rotated) + "\n")
    lists = data.make_split(str(folder), images)  # the Vinyals layout: each rotation a class
    assert lists.rotation_classes and not lists.upright and lists.parts["test"] == ("Gamma/character01",)
    bad = {
        "[training]\nAlpha/character01\n": r"bad.txt:1: unknown section \[training\]",
        "Alpha/character01\n[train]\n": r"bad.txt:1: 'Alpha/character01' comes before any \[train\]",
        "[train]\nAlpha\n[test]\nGamma/character01\n": r"bad.txt:2: 'Alpha' is not Alphabet/characterNN",
        "[train]\nAlpha/character01\n[test]\nAlpha/character01\n": r"bad.txt:4: Alpha/character01 is in the test "
        r"part and, at .*bad.txt:2, in the train part",
        "[train]\nAlpha/character01/rot000\n[test]\nGamma/character01/rot000\n": r"lists 1 of its 4 rotations",
        "[train]\nAlpha/character01\n": r"the split's test part is empty",
    }
    for text, message in bad.items():
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(ValueError, match=message):
            data.make_split(str(tmp_path / "bad.txt"), images)
    (tmp_path / "bad.txt").write_text("[train]\nAlpha/character99\n[test]\nGamma/character01\n")
    with pytest.raises(DataError, match=r"its train part names 1 characters the Omniglot data lacks"):
        data.make_split(str(tmp_path / "bad.txt"), images)
    good.write_text(good.read_text().replace("[test]", "Beta/character02\n[test]"))  # 2 classes: 2-way episodes
    task = OmniglotTask(split=str(good), ways=2, data_dir=str(data_dir))
    digest = task.split and task.digest
    good.write_text(good.read_text().replace("Beta/character01", "Beta/character03"))  # the file changed since
    with pytest.raises(ValueError, match=r"is not the one the model was trained with"):
        _ = OmniglotTask(split=str(good), ways=2, data_dir=str(data_dir), digest=digest).split
    with pytest.raises(ValueError, match="split must be one of 'paper', 'vinyals', 'lake' or the path of a split"):
        OmniglotTask(split=str(tmp_path / "nowhere.txt"))


def test_plastic_rl_train_names_the_image_extractor_in_params(data_dir, tmp_path, capsys):
    env_kwargs = ["--env-kwargs", f"data_dir:{data_dir}", "split:paper", "test_characters:5", "validation_characters:5"]
    extractor = "policy_kwargs:{features_extractor_class: ImageKeyExtractor, features_extractor_kwargs: {channels: 8}}"
    train = ["train", "--env", "PlasticOmniglot-v0", "-n", "24", "--n-envs", "2", "--no-progress-bar", *env_kwargs]
    assert main([*train, "-params", "n_steps:6", extractor, "-f", str(tmp_path)]) == 0
    config = (tmp_path / "plastic_a2c" / "PlasticOmniglot-v0_1" / "config.yml").read_text()
    assert "features_extractor_class: ImageKeyExtractor" in config  # the run's configuration stays plain text
    with pytest.raises(SystemExit):
        main([*train, "-params", "policy_kwargs:{features_extractor_class: Bogus}", "-f", str(tmp_path)])
    assert "features_extractor_class must be one of 'FlattenExtractor'" in capsys.readouterr().err


def test_train_learns_omniglot_from_reward_with_its_yaml_entry_and_scores_the_test_classes(data_dir, tmp_path):
    # The Omniglot-by-reward recipe of the command line: the YAML entry (whole episodes, the Conv-4 embedding),
    # held-out episodes of the test classes answered greedily.
    import csv

    from plastic_rl.cli import main

    split = ["split:paper", "test_characters:5", "validation_characters:5", f"data_dir:{data_dir}"]
    small = "policy_kwargs:{hidden_size: 8, features_extractor_kwargs: {channels: 4}}"
    held_out = ["--heldout-freq", "48", "--heldout-episodes", "4", "--heldout-env-kwargs", "part:test"]
    arguments = ["train", "--env", "PlasticOmniglot-v0", "-n", "96", "--n-envs", "2", "--no-progress-bar"]
    arguments += ["-f", str(tmp_path), "--env-kwargs", *split, "-params", small, *held_out, "--heldout-deterministic"]
    assert main(arguments) == 0
    (progress,) = tmp_path.rglob("progress.csv")
    rows = [row for row in csv.DictReader(progress.open()) if row.get("heldout/episodes")]
    assert [row["heldout/total_timesteps"] for row in rows] == ["48", "96"]
    assert all(0 <= float(row["heldout/reward_mean"]) <= 1 for row in rows)  # the fraction of queries named right
    config = (progress.parent / "config.yml").read_text()
    assert "n_steps: 12" in config and "query_steps: 2" in config and "ImageKeyExtractor" in config


def test_train_runs_the_readout_policy_with_its_yaml_entry_where_the_recurrent_cores_settings_give_way(
    data_dir, tmp_path
):
    import csv

    split = ["split:paper", "test_characters:5", "validation_characters:5", f"data_dir:{data_dir}"]
    small = "policy_kwargs:{features_extractor_kwargs: {channels: 4}}"
    held_out = ["--heldout-freq", "24", "--heldout-episodes", "4", "--heldout-env-kwargs", "part:test"]
    arguments = ["train", "--env", "PlasticOmniglot-v0", "--policy", "readout", "-n", "48", "--n-envs", "2"]
    arguments += ["--no-progress-bar", "--env-kwargs", *split, *held_out, "--heldout-deterministic"]
    readout = tmp_path / "readout"
    assert main([*arguments, "-f", str(readout), "--hyperparams-set", "readout", "-params", small]) == 0
    (progress,) = readout.rglob("progress.csv")
    rows = [row for row in csv.DictReader(progress.open()) if row.get("heldout/episodes")]
    assert [row["heldout/total_timesteps"] for row in rows] == ["24", "48"]
    config = (progress.parent / "config.yml").read_text()
    assert "policy: readout" in config and "n_steps: 6" in config and "hidden_size" not in config
    # Scored on the test classes beside the random policy, which reads the Dict observation's batch size.
    evaluation = ["evaluate", "--env", "PlasticOmniglot-v0", "-f", str(readout), "--n-episodes", "6"]
    out = tmp_path / "evaluation.json"
    assert main([*evaluation, "--env-kwargs", "part:test", "--deterministic", "--out", str(out)]) == 0
    policies = json.loads(out.read_text())["policies"]
    assert {name: result["episodes"] for name, result in policies.items()} == {"trained agent": 6, "random policy": 6}
    # The default entry is the recurrent core's: its size, eta and initialisation are not the read-out's options.
    default = tmp_path / "default"
    assert main([*arguments, "-f", str(default), "-params", small, "n_steps:12"]) == 0
    (progress,) = default.rglob("progress.csv")
    config = (progress.parent / "config.yml").read_text()
    assert "hidden_size" not in config and "hebbian_learning_rate" not in config


def test_the_omniglot_env_can_hold_each_drawing_and_the_query_for_several_steps(data_dir):
    kwargs = dict(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir))
    once, held = (
        gym.make("PlasticOmniglot-v0", **kwargs),
        gym.make("PlasticOmniglot-v0", steps_shown=2, query_steps=3, **kwargs),
    )
    shown, first_info = once.reset(seed=4)
    observations, info = [held.reset(seed=4)[0]], first_info
    assert info == first_info  # the same episode: the same draws from the same seed
    once_observations = [shown]
    for _ in range(5):
        once_observations.append(once.step(0)[0])
    rewards = []
    for _ in range(2 * 5 + 3):
        observation, reward, terminated, _, _ = held.step(info["target"])
        rewards.append(reward)
        if terminated:
            break
        observations.append(observation)
    # Each labelled drawing twice, then the query three times; only the last answer is scored (here the right one).
    assert len(observations) == 13 and rewards == [0.0] * 12 + [1.0] and terminated
    for step, observation in enumerate(observations):
        expected = once_observations[min(step // 2, 5)]
        np.testing.assert_array_equal(observation["image"], expected["image"])
        np.testing.assert_array_equal(observation["label"], expected["label"])
    with pytest.raises(ValueError, match="query_steps must be a positive integer"):
        gym.make("PlasticOmniglot-v0", query_steps=0, **kwargs)


def test_a_frozen_image_key_extractor_keeps_its_embedding_while_the_rest_of_the_agent_learns(data_dir):
    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv

    from plastic_rl.agents import ImageKeyExtractor, PlasticA2C

    kwargs = dict(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir))
    vec_env = DummyVecEnv([lambda: gym.make("PlasticOmniglot-v0", **kwargs)] * 2)
    policy_kwargs = {"hidden_size": 8, "features_extractor_class": ImageKeyExtractor,
                     "features_extractor_kwargs": {"channels": 4, "frozen": True}}  # fmt: skip
    model = PlasticA2C("PlasticRecurrentPolicy", vec_env, n_steps=6, policy_kwargs=policy_kwargs, seed=0)
    embedding = {name: value.clone() for name, value in model.policy.features_extractor.state_dict().items()}
    core = model.policy.core.weight.detach().clone()
    model.learn(24)
    for name, value in model.policy.features_extractor.state_dict().items():
        torch.testing.assert_close(value, embedding[name], rtol=0, atol=0)
    assert not torch.equal(model.policy.core.weight, core)


def test_batch_statistics_train_the_extractors_batch_norm_in_updates_and_the_recurrent_core_then_reruns_rollouts(
    data_dir,
):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from plastic_rl.agents import ImageKeyExtractor, PlasticA2C

    kwargs = dict(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir))
    space = gym.make("PlasticOmniglot-v0", **kwargs).observation_space
    assert not ImageKeyExtractor(space, channels=4).train().embedding.training  # the default: inference mode
    assert ImageKeyExtractor(space, channels=4, batch_statistics=True).train().embedding.training
    with pytest.raises(ValueError, match="frozen and batch_statistics exclude each other"):
        ImageKeyExtractor(space, frozen=True, batch_statistics=True)
    vec_env = DummyVecEnv([lambda: gym.make("PlasticOmniglot-v0", **kwargs)] * 2)
    for policy, extra in (("PlasticReadoutPolicy", {}), ("PlasticRecurrentPolicy", {"hidden_size": 8})):
        policy_kwargs = {"features_extractor_class": ImageKeyExtractor,
                         "features_extractor_kwargs": {"channels": 4, "batch_statistics": True}, **extra}  # fmt: skip
        model = PlasticA2C(policy, vec_env, n_steps=6, policy_kwargs=policy_kwargs, seed=0)
        assert model.policy.record_rollout(model.policy.initial_state(2), 6) is None
        running_mean = model.policy.features_extractor.embedding[1].running_mean.clone()
        model.learn(24)
        assert not torch.equal(model.policy.features_extractor.embedding[1].running_mean, running_mean)


def test_plastic_a2c_with_the_readout_learns_the_tiny_alphabet_from_reward_in_seconds(data_dir):
    # The sampled answers of training episodes: at alpha 1 the untrained read-out's softmax is nearly uniform (chance
    # 0.2); learning from the reward sharpens it (about 0.37 after 60 updates at seed 0; 0.28 is 3 standard errors
    # of 320 episodes above chance).
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from plastic_rl.agents import ImageKeyExtractor, PlasticA2C

    kwargs = dict(split="paper", test_characters=5, validation_characters=5, data_dir=str(data_dir))
    env = DummyVecEnv([lambda: Monitor(gym.make("PlasticOmniglot-v0", **kwargs))] * 16)
    policy_kwargs = {"alpha_init": 1.0, "features_extractor_class": ImageKeyExtractor,
                     "features_extractor_kwargs": {"channels": 8, "batch_statistics": True}}  # fmt: skip
    settings = dict(n_steps=6, gamma=1.0, learning_rate=0.01, policy_kwargs=policy_kwargs, seed=0)
    model = PlasticA2C("PlasticReadoutPolicy", env, **settings)
    rewards = []
    for _ in range(60):
        model.learn(96, reset_num_timesteps=False)
        rewards += [episode["r"] for episode in list(model.ep_info_buffer)[-16:]]
    first, last = np.mean(rewards[:160]), np.mean(rewards[-320:])
    assert first < 0.3 and last > 0.28 and last > first


def test_a_study_turns_a_flag_on_for_one_condition(data_dir, tmp_path, capsys):
    import argparse

    from plastic_rl.commands import experiment
    from plastic_rl.experiments import study

    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    arguments = ["omniglot", "--conditions", "plastic", "prototypical", "--seeds", "1", "--steps", "10"]
    arguments += ["--data-dir", str(data_dir), "--split", "paper", "--test-characters", "5"]
    arguments += ["--validation-characters", "5", "-f", str(tmp_path / "study"), "--condition-set", "plastic"]
    runs = study.plan(*experiment.parsed_study(parser.parse_args([*arguments, "normalize_features", "true"])))
    assert ["--normalize-features" in run.argv for run in runs] == [True, False]
    with pytest.raises(SystemExit) as stopped:
        main(["experiment", *arguments, "normalize_features", "1"])
    assert stopped.value.code == 2
    assert "normalize_features is a flag: its values are true and false; got '1'" in capsys.readouterr().err
