"""The trainer end to end on tiny shards: loss goes down, kill -9 and resume, stage chaining, torchrun + FSDP2."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mio.config import ConfigError
from mio.data.encode import EncodeConfig, Sample, encode_sample
from mio.data.shards import ShardWriter
from mio.segments import Image, Speech, Text
from mio.train.loop import Stage, TrainingDiverged, load_config, run_stages

WORDS = "red green blue circle square triangle left right big small the a is on of".split()


def make_docs(vocab, data_type, n, seed):
    g = random.Random(seed)
    cfg = EncodeConfig(speech_frame_rate=25.0)
    docs = []
    for i in range(n):
        text = " ".join(g.choice(WORDS) for _ in range(g.randint(3, 12)))
        codes = [hash((w, j)) % 64 for j, w in enumerate(text.split()[:8])] + [0] * 8
        if data_type == "image_text_pair":
            sample = Sample(data_type, [Image(codes=torch.tensor(codes[:8])), Text(text)])
        elif data_type == "speech_text_pair":
            t = g.randint(3, 10)
            speech_codes = torch.randint(0, 32, (4, t), generator=torch.Generator().manual_seed(i))
            sample = Sample(data_type, [Speech(codes=speech_codes), Text(text)])
        else:
            sample = Sample(data_type, [Text(text + ". " + text)])
        docs.append(encode_sample(sample, vocab, cfg, g))
    return docs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, text_tokenizer, vocab):
    root = tmp_path_factory.mktemp("train_data")
    text_tokenizer.save_pretrained(root / "text_tokenizer")
    for split, n, seed in (("train", 120, 0), ("val", 16, 1)):
        for data_type in ("image_text_pair", "language", "speech_text_pair"):
            with ShardWriter(root / split / data_type / "shard_00000", vocab.size) as w:
                for d in make_docs(vocab, data_type, n, seed):
                    w.append(d)
    return root


def write_config(path: Path, data_dir: Path, out_dir: Path, **extra) -> Path:
    top = dict(name="stage1", out_dir=str(out_dir), text_tokenizer=str(data_dir / "text_tokenizer"), steps=12,
               batch_size=2, context_length=96, buffer_rows=4, log_every=1, save_every=3, eval_every=6, eval_docs=8, seed=3)
    top.update(extra)
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    lines += [
        "[layout]", "image_codebook_size = 64", "tokens_per_image = 8", "speech_codebook_size = 32", "speech_layers = 4",
        "[model]", "hidden_size = 48", "num_layers = 2", "num_heads = 4", "num_kv_heads = 2", "intermediate_size = 96",
        "[optim]", "lr = 3e-3", "warmup_ratio = 0.1",
        "[data]", "seed = 5", "ratios = { pair = 12, lang = 2, speech = 2 }",
        "[data.sources]",
        *(f'{t} = "{data_dir / "train" / t}"' for t in ("image_text_pair", "language", "speech_text_pair")),
        "[validation]",
        *(f'{t} = "{data_dir / "val" / t}"' for t in ("image_text_pair", "language", "speech_text_pair")),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def losses(run_dir: Path) -> dict[int, float]:
    history = json.loads((run_dir / "run.json").read_text())["metrics"]
    return {r["step"]: r["loss"] for r in history if "loss" in r}


def test_loss_goes_down_and_run_dir_is_complete(tmp_path, data_dir):
    cfg = write_config(tmp_path / "s1.toml", data_dir, tmp_path / "run", steps=30, save_every=10, eval_every=15)
    run_stages([str(cfg)])
    run = tmp_path / "run"
    curve = losses(run)
    assert curve[30] < 0.8 * curve[1]
    meta = json.loads((run / "run.json").read_text())
    expected = {"loss_text", "loss_image", "loss_speech", "loss/image_text_pair", "loss/language", "loss/speech_text_pair"}
    assert expected <= {k for r in meta["metrics"] for k in r}
    assert any("val_loss/language" in r for r in meta["metrics"])
    assert abs(meta["data_shares"]["speech_text_pair"] - 2 / 16) < 0.1
    for f in ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl"):
        assert (run / f).is_file(), f
    assert (run / "checkpoints" / "latest").is_file()


def test_kill9_and_resume_gives_the_same_losses(tmp_path, data_dir):
    ref_cfg = write_config(tmp_path / "ref.toml", data_dir, tmp_path / "ref")
    run_stages([str(ref_cfg)])
    reference = losses(tmp_path / "ref")

    out = tmp_path / "killed"
    cfg = write_config(tmp_path / "killed.toml", data_dir, out)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mio.cli", "train", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and not (latest.is_file() and latest.read_text().strip() >= "step_0000006"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.is_file(), "the run was killed before its first checkpoint"
    assert not (out / "run.json").exists(), "the run finished before it was killed"

    run_stages([str(cfg)], resume=True)
    resumed = losses(out)
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == pytest.approx(reference[step], abs=1e-6), step


def test_bf16_autocast_tracks_fp32(tmp_path, data_dir):
    """The GPU presets' precision (bf16 autocast, fp32 weights and loss) runs on any device
    and follows the fp32 run's loss curve."""
    fp32 = write_config(tmp_path / "fp32.toml", data_dir, tmp_path / "fp32", steps=6, eval_every=0)
    bf16 = write_config(tmp_path / "bf16.toml", data_dir, tmp_path / "bf16", steps=6, eval_every=0, precision="bf16")
    run_stages([str(fp32)])
    run_stages([str(bf16)])
    reference, mixed = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert sorted(mixed) == sorted(reference)
    for step in reference:
        assert mixed[step] == pytest.approx(reference[step], rel=0.02), step
    assert mixed != reference, "bf16 gave bit-identical losses: autocast was not applied"
    weights = torch.load(tmp_path / "bf16" / "checkpoints" / "step_0000003" / "trainer_state.pt", weights_only=True)
    assert all(s["exp_avg"].dtype == torch.float32 for s in weights["optimizer"]["state"].values())


def test_stages_chain_from_one_checkpoint_to_the_next(tmp_path, data_dir):
    a = write_config(tmp_path / "a.toml", data_dir, tmp_path / "a", steps=4)
    b = write_config(tmp_path / "b.toml", data_dir, tmp_path / "b", steps=2, name="stage2")
    b.write_text(b.read_text().replace("hidden_size = 48", "hidden_size = 256"))  # ignored: b starts from a
    run_stages([str(a), str(b)])
    meta = json.loads((tmp_path / "b" / "run.json").read_text())
    assert meta["config"]["init_from"] == str(tmp_path / "a")
    # b records the shape it trained (a's), not the one its config named and init_from overrode
    assert (meta["config"]["model"]["hidden_size"], meta["config"]["model"]["num_kv_heads"]) == (48, 2)
    # resuming a finished chain skips both stages
    run_stages([str(a), str(b)], resume=True)


def test_bad_configs_name_the_key(tmp_path, data_dir):
    cfg = write_config(tmp_path / "c.toml", data_dir, tmp_path / "c")
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_config(cfg, {"stepz": 3})
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(cfg, {"optim.lr": "fast"})
    with pytest.raises(ConfigError, match="unknown group 'speeech'"):
        load_config(cfg, {"data.ratios": {"speeech": 1}})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    missing = write_config(tmp_path / "m.toml", data_dir, tmp_path / "m", text_tokenizer=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="text_tokenizer: path not found"):
        run_stages([str(missing)])


@pytest.mark.parametrize("override, message", [
    ({"optim.lr": float("inf")}, "optim.lr: expected a finite number, got inf"),
    ({"optim.lr": float("nan")}, "optim.lr: expected a finite number"),
    ({"keep_checkpoints": -1}, "keep_checkpoints must be >= 1, got -1"),
    ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1"),
    ({"log_every": 0}, "log_every must be >= 1"),
    ({"save_every": 0}, "save_every must be >= 1"),
    ({"model.num_heads": 0}, "num_heads must be >= 1"),
    ({"model.num_heads": 16, "model.num_kv_heads": 16}, "hidden_size / num_heads must be even"),
    ({"optim.beta2": 1.0}, r"beta1 and beta2 must be in \[0, 1\)"),
])
def test_settings_that_would_break_training_are_refused_on_load(tmp_path, data_dir, override, message):
    cfg = write_config(tmp_path / "c.toml", data_dir, tmp_path / "c")
    with pytest.raises(ConfigError, match=message):
        load_config(cfg, override)


def test_a_diverging_run_stops_with_its_last_checkpoint_intact(tmp_path, data_dir):
    cfg = write_config(tmp_path / "d.toml", data_dir, tmp_path / "d", steps=8, save_every=3, eval_every=0)
    config = load_config(cfg)
    stage = Stage(config)
    for _ in range(3):
        stage.train_step()
    stage.save_checkpoint()
    with torch.no_grad():  # what a runaway learning rate leaves behind
        next(stage.model.parameters()).fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match=r"stage1 step 4: the loss or its gradient is not finite"):
        stage.train_step()
    resumed = Stage(config, resume=True)
    assert resumed.step == 3
    assert all(torch.isfinite(p).all() for p in resumed.model.parameters())


def test_a_context_shorter_than_one_media_block_is_an_error_not_a_hang(tmp_path, data_dir):
    cfg = write_config(tmp_path / "h.toml", data_dir, tmp_path / "h", context_length=8)
    config = load_config(cfg, {"data.ratios": {"pair": 1}})
    with pytest.raises(ValueError, match="media block longer than context_length 8"):
        Stage(config).train_step()


def test_shards_of_another_vocabulary_are_refused(tmp_path, data_dir, vocab):
    other = tmp_path / "other"
    with ShardWriter(other / "shard_00000", vocab.size + 10) as w:
        for d in make_docs(vocab, "language", 4, 0):
            w.append(d)
    cfg = write_config(tmp_path / "v.toml", data_dir, tmp_path / "v")
    config = load_config(cfg, {"data.sources.language": str(other)})
    with pytest.raises(ValueError, match=rf"language shards at .* vocabulary of {vocab.size + 10} tokens"):
        Stage(config)


def test_a_resume_into_another_shape_layout_or_mixture_is_refused(tmp_path, data_dir):
    cfg = write_config(tmp_path / "r.toml", data_dir, tmp_path / "r", steps=6, save_every=3, eval_every=0)
    stage = Stage(load_config(cfg))
    stage.train_step()
    stage.save_checkpoint()
    for override, message in [
        ({"model.hidden_size": 64}, r"model.embed_tokens.weight is \[\d+, 48\] there, \[\d+, 64\] here"),
        ({"model.num_layers": 3}, r"does not fit this stage's model: 9 tensors missing \(first \['model.layers.2"),
        ({"data.seed": 6}, "mixture state has seed 5, the config 6"),
        ({"data.ratios": {"pair": 1}}, "mixture state is for sources"),
    ]:
        with pytest.raises(ValueError, match=message):
            Stage(load_config(cfg, override), resume=True)


def test_shards_of_another_media_layout_are_refused(tmp_path, data_dir, vocab):
    cfg = write_config(tmp_path / "l.toml", data_dir, tmp_path / "l")
    config = load_config(cfg)
    written = tmp_path / "written"
    with ShardWriter(written / "shard_00000", vocab.size, dataclasses.asdict(config.layout)) as w:
        for d in make_docs(vocab, "language", 4, 0):
            w.append(d)
    Stage(load_config(cfg, {"data.sources.language": str(written)}))  # the same layout: accepted
    with pytest.raises(ValueError, match=r"language shards at .* layout image_codebook_size = 64; .* says 60"):
        Stage(load_config(cfg, {"data.sources.language": str(written), "layout.image_codebook_size": 60}))


def test_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    from mio.cli.main import main

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nout_dir = "y"\ntext_tokenizer = "z"\nsteps = "many"\n[data]\nratios = {lang = 1}\n')
    assert main(["train", str(bad)]) == 2


@pytest.mark.distributed
def test_torchrun_two_cpu_processes_fsdp2(tmp_path, data_dir):
    out = tmp_path / "fsdp"
    cfg = write_config(tmp_path / "fsdp.toml", data_dir, out, steps=16, eval_every=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "mio.cli", "train", str(cfg)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    curve = losses(out)
    assert curve[16] < curve[1]
    # the checkpoint reloads: resume under torchrun for 4 more steps
    cfg2 = write_config(tmp_path / "fsdp2.toml", data_dir, out, steps=20, eval_every=8)
    (out / "run.json").unlink()
    done = subprocess.run(cmd[:-1] + [str(cfg2), "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed stage1" in done.stderr
    assert max(losses(out)) == 20
