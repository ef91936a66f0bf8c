import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image as PILImage

from conftest import SMALL_LAYOUT
from mio.cli import main as cli
from mio.data.manifest import ManifestError, parse_line
from mio.data.prepare import SUMMARY_FILE, MediaError, PrepareConfig, prepare
from mio.data.shards import open_dataset
from mio.media.video import write_gif
from mio.segments import Image, Speech
from mio.tokenizers import base

RATE = 8000
FRAME_RATE = 50.0


def image_codes(image: PILImage.Image) -> torch.Tensor:
    """The fake tokenizer's codes: a hash of the pixels."""
    digest = hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).digest()
    return torch.tensor([b % SMALL_LAYOUT.image_codebook_size for b in digest[: SMALL_LAYOUT.tokens_per_image]])


class FakeImageTokenizer:
    """Protocol-conforming image tokenizer: pixel hash -> codes; counts what it encodes."""

    codebook_size = SMALL_LAYOUT.image_codebook_size
    tokens_per_image = SMALL_LAYOUT.tokens_per_image

    def __init__(self):
        self.encoded = 0
        self.calls = 0

    def encode(self, images):
        self.calls += 1
        self.encoded += len(images)
        return torch.stack([image_codes(im) for im in images]).long()

    @classmethod
    def load(cls, directory):
        return cls()


class FakeSpeechTokenizer:
    """Protocol-conforming speech tokenizer: waveform length -> 4 x T codes."""

    codebook_size = SMALL_LAYOUT.speech_codebook_size
    frame_rate = FRAME_RATE
    sample_rate = RATE

    def __init__(self):
        self.encoded = 0

    def encode(self, wave, sample_rate):
        self.encoded += 1
        n = wave.shape[-1]
        t = max(1, round(n / sample_rate * self.frame_rate))
        return ((torch.arange(4 * t).view(4, t) * 7 + n) % self.codebook_size).long()

    @classmethod
    def load(cls, directory):
        return cls()


def png(path: Path, colour) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (8, 8), colour).save(path)
    return path.name if path.parent.name == "media" else str(path)


def wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), RATE)


def write_jsonl(path: Path, lines) -> Path:
    path.write_text("\n".join(json.dumps(line) if not isinstance(line, str) else line for line in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def text_dir(text_tokenizer, tmp_path_factory):
    d = tmp_path_factory.mktemp("text_tokenizer")
    text_tokenizer.save_pretrained(str(d))
    return d


@pytest.fixture
def corpus(tmp_path):
    """A small corpus: media files and two manifests (one mixed with types, one typed)."""
    m = tmp_path / "corpus"
    for i, colour in enumerate(["red", "green", "blue", "yellow", "white"]):
        png(m / "media" / f"im{i}.png", colour)
    write_gif([PILImage.new("RGB", (8, 8), (30 * i, 0, 0)) for i in range(6)], m / "media" / "clip.gif")
    wav(m / "media" / "short.wav", 0.4)
    wav(m / "media" / "long.wav", 16.0)  # over the paper's 15 s: dropped
    frames = [f"media/im{i}.png" for i in range(5)]
    mixed = write_jsonl(m / "mixed.jsonl", [
        {"type": "image_text_pair", "segments": [{"image": "media/im0.png"}, {"text": "a red square"}]},
        {"type": "image_text_pair", "segments": [{"text": "the same red square"}, {"image": "media/im0.png"}]},
        {"type": "image_text_pair", "segments": [{"image": "media/im1.png"}, {"text": "a green square"}]},
        "",
        {"type": "video_text_pair", "segments": [{"video": frames}, {"text": "colours change"}]},
        {
            "type": "image_text_interleaved",
            "segments": [{"text": "first"}, {"image": "media/im2.png"}, {"text": "then"}, {"image": "media/im3.png"}],
        },
        {"type": "video_text_interleaved", "segments": [{"text": "a clip:"}, {"video": "media/clip.gif"}, {"text": "the end"}]},
        {"type": "speech_text_pair", "segments": [{"speech": "media/short.wav"}, {"text": "hello world"}]},
        {"type": "speech_text_pair", "segments": [{"speech": "media/long.wav"}, {"text": "too long"}]},
        {"type": "sft", "task": "asr", "messages": [
            {"role": "user", "content": [{"text": "Transcribe this speech:"}, {"speech": "media/short.wav"}]},
            {"role": "assistant", "content": "hello world"}]},
        {"type": "sft", "task": "vqa", "mode": "std", "messages": [
            {"role": "user", "content": [{"image": "media/im4.png"}, {"text": "what colour is the shape?"}]},
            {"role": "assistant", "content": "white"}]},
    ])
    language = write_jsonl(m / "language.jsonl", [
        {"segments": [{"text": "the green triangle is big."}]},
        {"type": "language", "segments": [{"text": "a red circle on the left of a blue square"}]},
        {"segments": [{"text": "1 2 3 4 5"}]},
    ])
    return mixed, language


def make_cfg(tmp_path, text_dir, corpus, **kw) -> PrepareConfig:
    mixed, language = corpus
    fields = {"docs_per_shard": 2, "records_per_chunk": 3, "image_batch_size": 2, **kw}
    return PrepareConfig(
        output_dir=str(tmp_path / fields.pop("out", "shards")),
        text_tokenizer=str(text_dir),
        manifests=[str(mixed)],
        typed_manifests={"language": [str(language)]},
        layout=SMALL_LAYOUT,
        **fields,
    )


def test_prepare_end_to_end(tmp_path, text_dir, corpus, vocab):
    cfg = make_cfg(tmp_path, text_dir, corpus)
    images, speech = FakeImageTokenizer(), FakeSpeechTokenizer()
    summary = prepare(cfg, image_tokenizer=images, speech_tokenizer=speech)
    out = Path(cfg.output_dir)

    assert summary["dropped"] == {"speech_text_pair": 1}
    assert summary["records"]["image_text_pair"] == 3 and summary["records"]["language"] == 3
    docs = {t: v["docs"] for t, v in summary["data_types"].items()}
    assert docs == {"image_text_pair": 3, "language": 3, "video_text_pair": 1, "image_text_interleaved": 1,
                    "video_text_interleaved": 1, "speech_text_pair": 1, "sft/asr": 1, "sft/vqa": 1}
    assert summary["data_types"]["language"]["shards"] == 2  # 2 docs per shard
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary
    # each distinct file is tokenized once; the over-long speech not at all; images in batches
    assert images.encoded == 5 + 6 and speech.encoded == 1 and images.calls >= 3  # 6 frames of the GIF

    pairs = open_dataset(out / "image_text_pair")
    assert len(pairs) == 3
    first = vocab.parse(pairs[0].ids)
    red = image_codes(PILImage.open(Path(corpus[0]).parent / "media" / "im0.png"))
    assert any(isinstance(s, Image) and torch.equal(s.codes, red) for s in first)
    assert sum(len(d) for d in pairs) == summary["data_types"]["image_text_pair"]["tokens"]

    video = vocab.to_string(open_dataset(out / "video_text_pair")[0].ids)
    assert video.count("<image>") == 4  # the paper's minimum for a short description
    clip = vocab.parse(open_dataset(out / "video_text_interleaved")[0].ids)
    assert [s.codes.tolist() for s in clip if isinstance(s, Image)] == [
        image_codes(PILImage.new("RGB", (8, 8), (30 * i, 0, 0))).tolist() for i in range(6)]  # all 6 (<= 8) frames, in order

    sft = open_dataset(out / "sft")
    assert {d.data_type for d in sft} == {"sft/asr", "sft/vqa"}
    asr = open_dataset(out / "sft" / "asr")[0]
    assert any(isinstance(s, Speech) for s in vocab.parse(asr.ids))
    target = vocab.decode_text([i for i, m in zip(asr.ids, asr.loss) if m])
    assert target == "hello world<|im_end|>"  # loss on the assistant turn only


def test_deterministic_and_refuses_to_overwrite(tmp_path, text_dir, corpus):
    a = make_cfg(tmp_path, text_dir, corpus, out="a")
    # The same corpus in another folder, read in other chunk and batch sizes.
    moved = tmp_path / "elsewhere" / "corpus"
    shutil.copytree(Path(corpus[0]).parent, moved)
    b = make_cfg(tmp_path, text_dir, (moved / "mixed.jsonl", moved / "language.jsonl"), out="b",
                 records_per_chunk=100, image_batch_size=64)
    for cfg in (a, b):
        prepare(cfg, image_tokenizer=FakeImageTokenizer(), speech_tokenizer=FakeSpeechTokenizer())
    files_a = sorted(p.relative_to(a.output_dir) for p in Path(a.output_dir).rglob("*.bin"))
    assert files_a == sorted(p.relative_to(b.output_dir) for p in Path(b.output_dir).rglob("*.bin"))
    for rel in files_a:
        assert (Path(a.output_dir) / rel).read_bytes() == (Path(b.output_dir) / rel).read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare(a, image_tokenizer=FakeImageTokenizer(), speech_tokenizer=FakeSpeechTokenizer())
    a.overwrite = True
    prepare(a, image_tokenizer=FakeImageTokenizer(), speech_tokenizer=FakeSpeechTokenizer())


def test_bad_line_and_bad_media_name_file_and_line(tmp_path, text_dir, corpus):
    mixed, _ = corpus
    lines = mixed.read_text().splitlines()
    broken = write_jsonl(mixed.parent / "broken.jsonl", lines[:2] + ['{"type": "image_text_pair", "segments": [}'])
    cfg = PrepareConfig(
        output_dir=str(tmp_path / "o"), text_tokenizer=str(text_dir), manifests=[str(broken)], layout=SMALL_LAYOUT
    )
    with pytest.raises(ManifestError, match=r"broken.jsonl:3: invalid JSON"):
        prepare(cfg, image_tokenizer=FakeImageTokenizer())
    assert not (tmp_path / "o").exists()  # validated before anything is written

    (mixed.parent / "media" / "bad.png").write_bytes(b"not a png at all")
    bad = write_jsonl(mixed.parent / "bad.jsonl", lines[:1] + [
        {"type": "image_text_pair", "segments": [{"image": "media/bad.png"}, {"text": "x"}]}])
    cfg.manifests = [str(bad)]
    with pytest.raises(MediaError, match=r"bad.jsonl:2: .*bad.png: cannot read image"):
        prepare(cfg, image_tokenizer=FakeImageTokenizer())
    assert not list((tmp_path / "o").rglob("meta.json"))  # the open shard was aborted

    cfg.manifests = [str(mixed)]
    with pytest.raises(ValueError, match="image_tokenizer is not set"):
        prepare(cfg)


@pytest.mark.parametrize("line,message", [
    ({"type": "image_text_pair", "segments": [{"image": "a.png"}]}, "one image segment and one text"),
    ({"type": "speech_text_pair", "segments": [{"image": "a.png"}, {"text": "x"}]}, "one speech segment"),
    ({"type": "language", "segments": [{"text": "x"}, {"image": "a.png"}]}, "text segments only"),
    ({"type": "pictures", "segments": [{"text": "x"}]}, "unknown type"),
    ({"type": "language", "segments": [{"txt": "x"}]}, "one key of"),
    ({"type": "language", "segments": [{"text": "x"}], "caption": "y"}, "unknown key 'caption'"),
    ({"type": "sft", "messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"type": "sft", "mode": "loud", "messages": [{"role": "user", "content": "x"}]}, "mode 'loud'"),
    ({"segments": [{"text": "x"}]}, "missing \"type\""),
])
def test_manifest_schema_errors(line, message):
    with pytest.raises(ManifestError, match=message):
        parse_line(json.dumps(line), Path("/data"), "m.jsonl:7")


def test_manifest_paths_are_relative_to_the_manifest():
    rec = parse_line(json.dumps({"type": "video_text_pair", "segments": [{"video": ["f0.png", "/abs/f1.png"]}, {"text": "x"}]}),
                     Path("/data/set"), "m.jsonl:1")
    (video,) = list(rec.media())
    assert video.frames and video.paths == (Path("/data/set/f0.png"), Path("/abs/f1.png"))


def test_cli_prepare(tmp_path, text_dir, corpus, monkeypatch):
    for kind, cls in (("image", FakeImageTokenizer), ("speech", FakeSpeechTokenizer)):
        monkeypatch.setitem(base.TOKENIZER_TYPES, f"fake-{kind}", f"{__name__}:{cls.__name__}")
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "config.json").write_text(json.dumps({"type": f"fake-{kind}"}))
    mixed, language = corpus
    layout = "\n".join(
        f"{k} = {getattr(SMALL_LAYOUT, k)}"
        for k in ("image_codebook_size", "tokens_per_image", "speech_codebook_size", "speech_layers")
    )
    toml = tmp_path / "prepare.toml"
    toml.write_text(
        f'output_dir = "{tmp_path / "cli_out"}"\ntext_tokenizer = "{text_dir}"\nimage_tokenizer = "{tmp_path / "image"}"\n'
        f'speech_tokenizer = "{tmp_path / "speech"}"\nmanifests = ["{mixed}"]\n'
        f'[typed_manifests]\nlanguage = ["{language}"]\n[layout]\n{layout}\n[encode]\nasr_template = "asr_stage3"\n'
    )
    assert cli.main(["prepare", str(toml)]) == 0
    summary = json.loads((tmp_path / "cli_out" / SUMMARY_FILE).read_text())
    assert summary["data_types"]["language"]["docs"] == 3
    assert cli.main(["prepare", str(toml)]) == 2  # exists, no --overwrite: one clear error line
    assert cli.main(["prepare", str(toml), "--overwrite"]) == 0


def test_keyframe_selection_keeps_one_frame_per_state(tmp_path):
    """A toyworld clip whose states last three MP4 frames each comes back as one frame per
    distinct state (an even pick would repeat some states and not others)."""
    import random

    from mio.data.prepare import load_video_frames
    from mio.judges import image as image_judge
    from mio.media.video import make_detector
    from mio.toyworld.scenes import render, sample_scenes
    from mio.toyworld.videos import STATE_MIN_FRAMES, STATE_THRESHOLD, sample_clip, write_clip

    for seed in range(3):
        clip = sample_clip(sample_scenes(1, seed=seed)[0], random.Random(seed), 6, 8)
        path = write_clip(clip, tmp_path / f"clip{seed}.mp4", image_size=64, repeat=3, fps=6.0)
        states = [s for i, s in enumerate(clip.states) if i == 0 or s != clip.states[i - 1]]
        frames = load_video_frames(path, 8, "keyframes", make_detector("content", STATE_THRESHOLD, STATE_MIN_FRAMES))
        read = [image_judge.object_key(image_judge.read_objects(f.resize((64, 64)))) for f in frames]
        assert read == [image_judge.object_key(image_judge.read_objects(render(s))) for s in states]
        assert len(load_video_frames(path, 8, "uniform")) == 8


def test_training_and_inference_read_odd_images_to_the_same_pixels(tmp_path, text_dir, vocab):
    from mio.api import load_image

    media = tmp_path / "odd"
    media.mkdir()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1], rgba[:4, :, 3] = 200, 255
    palette = PILImage.fromarray(rgba[..., :3]).convert("P")
    exif = PILImage.Exif()
    exif[0x0112] = 6
    nan = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    nan[0, 0] = np.nan
    PILImage.fromarray(rgba, "RGBA").save(media / "rgba.png")
    PILImage.fromarray(rgba[..., [1, 3]], "LA").save(media / "la.png")
    palette.save(media / "palette.png", transparency=0)
    PILImage.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 900).save(media / "gray16.png")
    PILImage.new("CMYK", (8, 8), (0, 200, 0, 0)).save(media / "cmyk.jpg")
    PILImage.new("RGB", (16, 8), (0, 0, 255)).save(media / "rotated.jpg", exif=exif.tobytes())
    PILImage.fromarray(nan, "F").save(media / "float.tiff")
    names = sorted(p.name for p in media.iterdir())
    manifest = write_jsonl(tmp_path / "odd.jsonl", [
        {"type": "image_text_pair", "segments": [{"image": f"odd/{n}"}, {"text": n}]} for n in names])
    cfg = PrepareConfig(output_dir=str(tmp_path / "shards"), text_tokenizer=str(text_dir), manifests=[str(manifest)],
                        layout=SMALL_LAYOUT)
    prepare(cfg, image_tokenizer=FakeImageTokenizer(), speech_tokenizer=FakeSpeechTokenizer())
    trained = {}
    for doc in open_dataset(tmp_path / "shards" / "image_text_pair"):
        segments = vocab.parse(doc.ids)
        (image,) = [s for s in segments if isinstance(s, Image)]
        text = "".join(s.text for s in segments if hasattr(s, "text"))
        (name,) = [n for n in names if n in text]  # the caption is the file's name, inside a template
        trained[name] = image.codes.tolist()
    assert set(trained) == set(names)
    for name in names:
        assert trained[name] == image_codes(load_image(media / name).image).tolist(), name
