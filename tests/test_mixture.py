import json
import random

import pytest

from mio.config import ConfigError, load
from mio.data.encode import Encoded
from mio.data.mixture import PAPER_STAGE_RATIOS, Mixture, MixtureConfig, group_of
from mio.data.shards import ShardWriter

IMAGE_BLOCK = 32 + 2  # 32 codes between <image> and </image>
SPEECH_TTS_PER_S = 200  # 4 layers x 50 Hz
SPEECH_ASR_PER_S = 50  # content layer only
DOCS_PER_TYPE = 150


def _length(data_type: str, rng: random.Random) -> int:
    """Document lengths resembling the paper's data (plus BOS/EOS)."""
    if data_type == "image_text_pair":
        return 2 + IMAGE_BLOCK + rng.randint(10, 30)
    if data_type == "language":
        return rng.randint(100, 600)
    if data_type == "image_text_interleaved":
        images = rng.randint(3, 5)
        return 2 + images * IMAGE_BLOCK + sum(rng.randint(20, 80) for _ in range(images))
    if data_type == "video_text_pair":
        return 2 + rng.randint(4, 8) * IMAGE_BLOCK + rng.randint(10, 40)
    if data_type == "video_text_interleaved":
        clips = rng.randint(2, 3)
        return 2 + sum(rng.randint(4, 8) * IMAGE_BLOCK + rng.randint(10, 40) for _ in range(clips))
    if data_type == "speech_text_pair":
        per_second = SPEECH_TTS_PER_S if rng.random() < 0.5 else SPEECH_ASR_PER_S
        return 2 + int(rng.uniform(2, 15) * per_second) + 2 + rng.randint(10, 40)
    raise ValueError(data_type)


def make_corpus(types, n=DOCS_PER_TYPE, seed=0):
    """Documents whose first id is a corpus-wide unique tag, so they can be told apart."""
    rng = random.Random(seed)
    corpus, tag = {}, 0
    for t in types:
        docs = []
        for _ in range(n):
            length = _length(t, rng)
            docs.append(Encoded([tag] + [1] * (length - 1), [True] * length, t))
            tag += 1
        corpus[t] = docs
    return corpus


ALL_TYPES = (
    "image_text_pair",
    "language",
    "image_text_interleaved",
    "video_text_pair",
    "video_text_interleaved",
    "speech_text_pair",
)


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(ALL_TYPES)


def take(mixture, n):
    return [next(mixture) for _ in range(n)]


def take_tokens(mixture, tokens):
    while mixture.tokens_seen < tokens:
        next(mixture)


@pytest.mark.parametrize("stage,speech_share", [("I", 0.125), ("II", 0.375), ("III", 0.75)])
def test_paper_stage_speech_token_share(corpus, stage, speech_share):
    m = Mixture.from_documents(corpus, PAPER_STAGE_RATIOS[stage], seed=1)
    take_tokens(m, 300_000)
    groups = m.group_shares()
    assert groups["speech"] == pytest.approx(speech_share, abs=0.015)
    weights = PAPER_STAGE_RATIOS[stage]
    for group, weight in weights.items():
        if weight > 0:
            assert groups[group] == pytest.approx(weight / sum(weights.values()), abs=0.015)
    shares = m.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["speech_text_pair"] == groups["speech"]
    if stage == "I":  # no interleaved or video data in Stage I
        assert "video_text_pair" not in shares and "interleaved_video" not in groups
    else:  # the three types of the interleaved+video group split it equally
        third = groups["interleaved_video"] / 3
        for t in ("image_text_interleaved", "video_text_pair", "video_text_interleaved"):
            assert shares[t] == pytest.approx(third, abs=0.01)


def test_type_weights_split_a_group(corpus):
    docs = {t: corpus[t] for t in ("image_text_interleaved", "video_text_pair", "language")}
    m = Mixture.from_documents(docs, {"interleaved_video": 1, "lang": 1}, seed=0, type_weights={"video_text_pair": 3})
    take_tokens(m, 100_000)
    assert m.shares()["video_text_pair"] == pytest.approx(0.375, abs=0.01)


def test_deterministic_given_seed(corpus):
    a = [d.ids[0] for d in take(Mixture.from_documents(corpus, PAPER_STAGE_RATIOS["II"], seed=3), 300)]
    b = [d.ids[0] for d in take(Mixture.from_documents(corpus, PAPER_STAGE_RATIOS["II"], seed=3), 300)]
    c = [d.ids[0] for d in take(Mixture.from_documents(corpus, PAPER_STAGE_RATIOS["II"], seed=4), 300)]
    assert a == b and a != c


def test_resume_equals_uninterrupted(corpus):
    ratios = PAPER_STAGE_RATIOS["III"]
    uninterrupted = Mixture.from_documents(corpus, ratios, seed=7)
    full = [d.ids[0] for d in take(uninterrupted, 700)]
    first = Mixture.from_documents(corpus, ratios, seed=7)
    head = [d.ids[0] for d in take(first, 400)]  # past the end of an epoch of the speech source
    state = json.loads(json.dumps(first.state_dict()))
    assert any(s["epoch"] > 0 for s in state["sources"].values())
    resumed = Mixture.from_documents(corpus, ratios, seed=7)
    resumed.load_state_dict(state)
    assert head + [d.ids[0] for d in take(resumed, 300)] == full
    assert resumed.shares() == uninterrupted.shares()

    with pytest.raises(ValueError, match="seed"):
        Mixture.from_documents(corpus, ratios, seed=8).load_state_dict(state)
    smaller = dict(corpus, language=corpus["language"][:-1])
    with pytest.raises(ValueError, match="language"):
        Mixture.from_documents(smaller, ratios, seed=7).load_state_dict(state)


def test_ranks_are_disjoint_and_cover_the_global_stream(corpus):
    ratios, world = PAPER_STAGE_RATIOS["II"], 3
    per_rank_docs = 40
    single = Mixture.from_documents(corpus, ratios, seed=2)
    glob = [d.ids[0] for d in take(single, world * per_rank_docs)]
    assert all(s["epoch"] == 0 for s in single.state_dict()["sources"].values())
    ranks = [Mixture.from_documents(corpus, ratios, seed=2, rank=r, world_size=world) for r in range(world)]
    per_rank = [[d.ids[0] for d in take(m, per_rank_docs)] for m in ranks]
    for r in range(world):
        assert per_rank[r] == glob[r::world]
    # all of it lies in the first epoch of every source, where no document repeats
    seen = [tag for rank in per_rank for tag in rank]
    assert len(seen) == len(set(seen))
    # the state is rank-independent: rank 1 resumes the global stream where rank 0 left it
    r0 = Mixture.from_documents(corpus, ratios, seed=2, rank=0, world_size=world)
    take(r0, 10)  # global docs 0, 3, ..., 27
    r1 = Mixture.from_documents(corpus, ratios, seed=2, rank=1, world_size=world)
    r1.load_state_dict(r0.state_dict())
    assert [d.ids[0] for d in take(r1, 5)] == glob[28::world][:5]  # r0 stopped after global doc 27


def test_epochs_restart_with_a_new_shuffle():
    docs = {"language": [Encoded([i] * 10, [True] * 10, "language") for i in range(5)]}
    tags = [d.ids[0] for d in take(Mixture.from_documents(docs, {"lang": 1}, seed=0), 15)]
    epochs = [tags[i : i + 5] for i in range(0, 15, 5)]
    assert all(sorted(e) == list(range(5)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1


def test_sft_is_its_own_group():
    docs = {
        "sft/asr": [Encoded([1] * 300, [False] * 100 + [True] * 200, "sft/asr")] * 3,
        "sft/vqa": [Encoded([2] * 30, [False] * 20 + [True] * 10, "sft/vqa")] * 3,
    }
    m = Mixture.from_documents(docs, {"sft": 1}, seed=0)
    take_tokens(m, 20_000)
    assert m.group_shares() == {"sft": 1.0}
    assert m.shares()["sft/asr"] == pytest.approx(0.5, abs=0.02)
    assert group_of("sft") == group_of("sft/tts") == "sft"


def test_config_loads_and_validates(tmp_path):
    toml = tmp_path / "mix.toml"
    toml.write_text(
        'seed = 5\n[sources]\nlanguage = "data/language"\nspeech_text_pair = "data/speech"\n'
        "[ratios]\nlang = 1\nspeech = 3\n"
    )
    cfg = load(MixtureConfig, toml)
    assert cfg.ratios == {"lang": 1.0, "speech": 3.0} and cfg.seed == 5
    bad = [
        ({"sources": {"pictures": "x"}, "ratios": {"lang": 1}}, "unknown data type"),
        ({"sources": {"language": "x"}, "ratios": {"lang": -1}}, ">= 0"),
        ({"sources": {"language": "x"}, "ratios": {"words": 1}}, "unknown group"),
        ({"sources": {"language": "x"}, "ratios": {"lang": 0}}, "positive weight"),
        ({"sources": {"language": "x"}, "ratios": {"lang": 1, "speech": 1}}, "'speech' has weight 1 but no source"),
        ({"sources": {"language": "x"}, "ratios": {"lang": 1}, "type_weights": {"language": -2}}, ">= 0"),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            load(MixtureConfig, data)


def test_opens_shard_sources_and_names_missing_ones(tmp_path, corpus):
    for t in ("language", "speech_text_pair"):
        with ShardWriter(tmp_path / t / "shard_00000", vocab_size=1 << 20) as w:
            for d in corpus[t][:20]:
                w.append(d)
    ratios = {"lang": 1, "speech": 1}
    cfg = MixtureConfig(sources={t: str(tmp_path / t) for t in ("language", "speech_text_pair")}, ratios=ratios, seed=1)
    from_disk = [d.ids for d in take(Mixture(cfg), 50)]
    in_memory = Mixture.from_documents({t: corpus[t][:20] for t in ("language", "speech_text_pair")}, ratios, seed=1)
    assert from_disk == [d.ids for d in take(in_memory, 50)]

    missing = MixtureConfig(sources={"language": str(tmp_path / "nope")}, ratios={"lang": 1})
    with pytest.raises(FileNotFoundError, match="'language'.*nope"):
        Mixture(missing)
    wrong = MixtureConfig(sources={"language": str(tmp_path / "speech_text_pair")}, ratios={"lang": 1})
    with pytest.raises(ValueError, match="holds 'speech_text_pair'"):
        Mixture(wrong)
