import json
import random

import numpy as np
import pytest

from mio.data.encode import Encoded
from mio.data.shards import META_FILE, TOKENS_FILE, Shard, ShardError, ShardWriter, find_shards, open_dataset

VOCAB = 1000


def make_docs(n, seed=0, data_type="language"):
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        length = rng.randint(1, 50)
        ids = [rng.randrange(VOCAB) for _ in range(length)]
        docs.append(Encoded(ids, [rng.random() < 0.7 for _ in range(length)], data_type))
    return docs


def write(directory, docs):
    with ShardWriter(directory, vocab_size=VOCAB, layout={"tokens_per_image": 8}) as w:
        for d in docs:
            w.append(d)
    return directory


def test_roundtrip_random_access_and_meta(tmp_path):
    docs = make_docs(30) + make_docs(5, seed=1, data_type="sft/asr")
    shard = Shard(write(tmp_path / "s0", docs), verify=True)
    assert len(shard) == len(docs)
    for i in [0, 7, len(docs) - 1, -1]:
        assert shard[i] == docs[i]
    assert list(shard) == docs
    assert shard.lengths.tolist() == [len(d) for d in docs]
    assert shard.token_counts == {"language": sum(map(len, docs[:30])), "sft/asr": sum(map(len, docs[30:]))}
    assert shard.meta["num_docs"] == 35 and shard.meta["layout"] == {"tokens_per_image": 8}
    with pytest.raises(IndexError):
        shard[len(docs)]


def test_writer_is_atomic_and_refuses_existing(tmp_path):
    target = tmp_path / "s0"
    with pytest.raises(RuntimeError):
        with ShardWriter(target, vocab_size=VOCAB) as w:
            w.append(make_docs(1)[0])
            raise RuntimeError("crash while writing")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write(target, make_docs(2))
    with pytest.raises(FileExistsError):
        ShardWriter(target, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="out of range"):
        ShardWriter(tmp_path / "s1", vocab_size=10).append(Encoded([11], [True], "language"))


def test_truncated_missing_and_wrong_version_are_named(tmp_path):
    d = write(tmp_path / "shard_00000", make_docs(10))
    tokens = d / TOKENS_FILE
    tokens.write_bytes(tokens.read_bytes()[:-4])
    with pytest.raises(ShardError, match=r"shard_00000.*tokens.bin.*truncated"):
        Shard(d)

    d = write(tmp_path / "shard_00001", make_docs(10))
    (d / "loss.bin").unlink()
    with pytest.raises(ShardError, match=r"shard_00001.*missing loss.bin"):
        Shard(d)

    d = write(tmp_path / "shard_00002", make_docs(10))
    meta = json.loads((d / META_FILE).read_text())
    meta["format_version"] = 99
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ShardError, match=r"shard_00002.*format version 99"):
        Shard(d)

    d = write(tmp_path / "shard_00003", make_docs(10))
    raw = bytearray((d / TOKENS_FILE).read_bytes())
    raw[0] ^= 0xFF
    (d / TOKENS_FILE).write_bytes(bytes(raw))
    Shard(d)  # same size: only the checksum catches it
    with pytest.raises(ShardError, match=r"shard_00003.*checksum"):
        Shard(d, verify=True)


def test_open_dataset_concatenates_nested_shards_and_skips_temporaries(tmp_path):
    a, b = make_docs(4, seed=2, data_type="sft/asr"), make_docs(6, seed=3, data_type="sft/tts")
    write(tmp_path / "sft" / "asr" / "shard_00000", a)
    write(tmp_path / "sft" / "tts" / "shard_00000", b)
    (tmp_path / "sft" / "tts" / ".shard_00001.tmp-1").mkdir()
    (tmp_path / "sft" / "tts" / ".shard_00001.tmp-1" / META_FILE).write_text("{}")
    assert len(find_shards(tmp_path / "sft")) == 2
    ds = open_dataset(tmp_path / "sft")
    assert len(ds) == 10
    assert [ds[i] for i in range(10)] == a + b and ds[-1] == b[-1]
    assert np.array_equal(ds.lengths, [len(d) for d in a + b])
    assert set(ds.token_counts) == {"sft/asr", "sft/tts"}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match="no shards"):
        open_dataset(tmp_path / "empty")
