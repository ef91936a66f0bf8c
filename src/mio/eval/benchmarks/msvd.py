"""MSVD-QA (test split), scored by exact match of the normalised answer.

Layout under DATA: `test_qa.json`, a list of `{"question", "answer", "video_id" | "video"}`
(and an `id`), and the clips in `videos/` (or `video/`, or the MSVD archive's
`YouTubeClips/`). A clip is named either directly (`video`: its file name, with or
without the extension) or, as in the original release, by `video_id` (`1` or `vid1`)
through `youtube_mapping.txt` (lines `{youtube clip name} vid{N}`). Items are the
questions in file order.

Instruction-tuned checkpoints are asked `{video} {question}\\nAnswer the question using a
single word or phrase.` (Table 12; the video is `MIN_FRAMES` uniformly spaced frames);
base checkpoints have no pre-training template for questions and the benchmark is skipped
for them. A reply counts when it equals the answer after the VQA normalisation
(`mio.eval.metrics.normalize_answer`). The blind baseline answers every question with the
most frequent answer of the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mio.eval import metrics
from mio.eval.benchmarks.common import Asker, BenchmarkSkipped, interval, most_frequent, read_json, require_file, take
from mio.eval.suites import text_of
from mio.prompts import instruction
from mio.segments import Video

QA_FILE = "test_qa.json"
MAPPING_FILE = "youtube_mapping.txt"
VIDEO_FOLDERS = ("videos", "video", "YouTubeClips")
VIDEO_SUFFIXES = (".avi", ".mp4", ".webm", ".mkv")
ANSWER_TOKENS = 16


@dataclass(frozen=True)
class VideoQuestion:
    """One question about one clip, and its answer."""

    id: str
    video: Path
    question: str
    answer: str


def read_mapping(data: Path) -> dict[str, str]:
    """`vid{N}` -> YouTube clip name from `youtube_mapping.txt` ({} when there is none)."""
    path = data / MAPPING_FILE
    if not path.is_file():
        return {}
    mapping = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}: line {number} is not '<clip name> vid<N>'")
        mapping[parts[1]] = parts[0]
    return mapping


def video_folder(data: Path) -> Path:
    """The folder of the clips."""
    for name in VIDEO_FOLDERS:
        if (data / name).is_dir():
            return data / name
    raise FileNotFoundError(f"{data / VIDEO_FOLDERS[0]}: MSVD video folder not found")


def video_path(folder: Path, record: dict, mapping: dict[str, str]) -> Path:
    """The clip a question is about: `video` names the file; `video_id` goes through the mapping."""
    if "video" in record:
        name = str(record["video"])
    elif "video_id" in record:
        key = str(record["video_id"])
        key = f"vid{key}" if key.isdigit() else key
        if not mapping:
            raise FileNotFoundError(f"{folder.parent / MAPPING_FILE}: needed to find the clip of video_id {key!r}, not found")
        if key not in mapping:
            raise ValueError(f"{folder.parent / MAPPING_FILE}: no clip named for {key!r}")
        name = mapping[key]
    else:
        raise ValueError(f"a question has neither 'video' nor 'video_id': {record}")
    for candidate in [folder / name, *(folder / f"{name}{suffix}" for suffix in VIDEO_SUFFIXES)]:
        if candidate.is_file():
            return candidate
    return require_file(folder / (name if Path(name).suffix else f"{name}{VIDEO_SUFFIXES[0]}"), "MSVD video")


def load_items(data: Path, limit: int | None = None) -> tuple[list[VideoQuestion], str]:
    """The first `limit` questions (file order) and the split's most frequent answer."""
    records = read_json(data / QA_FILE, "the MSVD-QA questions file")
    if not isinstance(records, list) or not records:
        raise ValueError(f"{data / QA_FILE}: expected a non-empty list of questions")
    folder, mapping = video_folder(data), read_mapping(data)
    items = []
    for k, record in enumerate(take(records, limit)):
        if "question" not in record or "answer" not in record:
            raise ValueError(f"{data / QA_FILE}: question {k} lacks 'question' or 'answer'")
        items.append(VideoQuestion(str(record.get("id", k)), video_path(folder, record, mapping), record["question"],
                                   str(record["answer"])))
    return items, most_frequent(str(r.get("answer", "")) for r in records)


def score(items: list[VideoQuestion], predictions: list[str]) -> dict:
    """Accuracy (exact match after normalisation) with its interval."""
    correct = [float(metrics.normalize_answer(p) == metrics.normalize_answer(i.answer)) for i, p in zip(items, predictions)]
    return {"accuracy": metrics.mean(correct), "ci95": {"accuracy": interval(correct)}}


def run(asker: Asker, data: Path, limit: int | None) -> dict:
    if asker.base:
        raise BenchmarkSkipped("MSVD-QA has no pre-training template; it needs an instruction-tuned checkpoint")
    items, constant = load_items(data, limit)
    prompts = [[Video(frames=str(i.video)), instruction("video_understanding", question=i.question)] for i in items]
    replies = asker.ask([i.id for i in items], prompts, "text", ANSWER_TOKENS)
    result = score(items, [text_of(r) for r in replies])
    result["baselines"] = {"most_frequent_answer": {"accuracy": score(items, [constant] * len(items))["accuracy"]}}
    return {**result, "n": len(items)}
