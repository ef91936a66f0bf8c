"""COCO captioning, Karpathy test split, scored by CIDEr.

Layout under DATA: the Karpathy split file `dataset_coco.json` (`images[]` with
`filepath`, `filename`, `split`, `cocoid` and `sentences[].raw`) and the image folders it
names (`val2014/COCO_val2014_*.jpg`). Items are the `test` images in file order.

Instruction-tuned checkpoints are asked `{image} Provide a one-sentence caption for the
provided image.` (Table 12); base checkpoints continue `{image} The caption of this image
is:` (Appendix B). CIDEr-D as pycocoevalcap computes it (x1; the paper's tables print x100)
over lowercased, punctuation-free captions; its interval is a bootstrap of the per-image
scores (whose mean is the corpus score). The blind baseline gives every image one caption:
the most frequent reference sentence of the training images (`train` and `restval`), or of
the test images when the file has no training images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mio.eval import metrics
from mio.eval.benchmarks.common import Asker, most_frequent, read_json, require_file, take
from mio.eval.suites import text_of
from mio.prompts import BASE_TEMPLATES, base_prompt, instruction
from mio.segments import Image

SPLIT_FILE = "dataset_coco.json"
TEST_SPLIT = "test"
TRAIN_SPLITS = ("train", "restval")
CAPTION_TOKENS = 64


@dataclass(frozen=True)
class CaptionItem:
    """One test image and its reference captions."""

    id: str
    image: Path
    references: list[str]


def load_items(data: Path, limit: int | None = None) -> tuple[list[CaptionItem], str]:
    """The first `limit` test images (file order) and the baseline's caption."""
    split = read_json(data / SPLIT_FILE, "the Karpathy split file of COCO")
    if not isinstance(split, dict) or not isinstance(split.get("images"), list):
        raise ValueError(f"{data / SPLIT_FILE}: expected an object with an 'images' list")
    items, training = [], []
    try:
        for record in split["images"]:
            references = [s["raw"] for s in record.get("sentences", [])]
            if record.get("split") in TRAIN_SPLITS:
                training += references
            elif record.get("split") == TEST_SPLIT:
                image = data / record["filepath"] / record["filename"]
                items.append(CaptionItem(str(record.get("cocoid", record["filename"])), image, references))
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{data / SPLIT_FILE}: an image record lacks {e} (filepath, filename, split, sentences[].raw)") from None
    if not items:
        raise ValueError(f"{data / SPLIT_FILE}: no images in the '{TEST_SPLIT}' split")
    items = take(items, limit)
    for item in items:
        require_file(item.image, "COCO image")
    constant = most_frequent(metrics.normalize_caption(r) for r in training or [r for i in items for r in i.references])
    return items, constant


def cider_per_image(references: list[list[str]], captions: list[str]) -> list[float]:
    """Each caption's CIDEr-D against its references, with the document frequencies of this
    set of images (so their mean is the corpus CIDEr of `metrics.cider`)."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [metrics.normalize_caption(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [metrics.normalize_caption(c)] for i, c in enumerate(captions)}
    _, scores = Cider().compute_score(gts, res)
    return [float(s) for s in scores]


def score(items: list[CaptionItem], captions: list[str]) -> dict:
    """CIDEr with its interval."""
    per_image = cider_per_image([i.references for i in items], captions)
    return {"cider": metrics.mean(per_image), "ci95": {"cider": list(metrics.bootstrap_interval(per_image))}}


def run(asker: Asker, data: Path, limit: int | None) -> dict:
    items, constant = load_items(data, limit)
    if asker.base:
        prompts = [base_prompt(BASE_TEMPLATES["image_captioning"], Image(image=str(i.image))) for i in items]
    else:
        prompts = [[Image(image=str(i.image)), instruction("image_captioning")] for i in items]
    replies = asker.ask([i.id for i in items], prompts, "text", CAPTION_TOKENS)
    result = score(items, [text_of(r) for r in replies])
    result["baselines"] = {"constant_caption": {"cider": score(items, [constant] * len(items))["cider"]}}
    return {**result, "n": len(items)}
