"""The demo report: one HTML page a person opens in a browser, and `metrics.json` for programs.

`write_report(demo_dir, preset, run_dirs)` reads what the demo steps left behind
(`demo_state.json`, `tokenizers/*/metrics.json`, `runs/<stage>/metrics.jsonl`,
`eval/{base,instruct}/`, the world's test items) and writes:

- `report.html`: the time of every step, the metric table per checkpoint beside the quality
  targets, loss curves per stage, per modality and per data type (the paper's Figure 2),
  the diagnosis of why generation is hard (`diagnosis.json`, `mio.eval.diagnosis`), and per
  suite a gallery of prompts and replies (pictures with what the pixel judge reads in them
  beside the truth, GIFs, audio players);
- `metrics.json`: `{"preset", "checkpoints": {"base": <eval json>, "instruct": <eval json>},
  "targets": [...], "steps": {STEP: seconds}, "total_seconds", "tokenizers", "diagnosis"}`, where an eval
  json is what `mio eval --json` writes (`{"suites": {SUITE: {METRIC: v, "n"}}, "model",
  "skipped", ...}`, see `../shared/DESIGN.md`).

Media are linked by relative path, so the demo directory can be moved or zipped as a whole.
"""

from __future__ import annotations

import html
import json
import operator
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

from mio.data.manifest import MediaRef, read_manifest
from mio.eval.diagnosis import DIAGNOSIS_FILE
from mio.eval.harness import baseline_summary, format_value, headline
from mio.judges.image import object_key, read_objects
from mio.toyworld.scenes import Scene, caption
from mio.toyworld.tasks import scene_from_json

CHECKPOINTS = ("base", "instruct")
# The tokenizer figures shown on the page (metrics.json keeps them all).
TOKENIZER_HEADLINES = {
    "image": ("judge_exact", "psnr", "ssim", "codebook_usage", "codebook_perplexity", "encode_images_per_s",
              "decode_images_per_s", "train_seconds"),
    "speech": ("judge.wer_reconstructed", "judge.wer_original", "heldout.layer1_ctc_cer",
               "heldout.probe_speaker_accuracy.layer1", "heldout.probe_speaker_accuracy.layers2_4",
               "heldout.encode_rtf", "heldout.decode_rtf", "train.seconds"),
}
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 520, 220, 36
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


@dataclass(frozen=True)
class Target:
    """A quality target of the default preset (issue 7), checked on the instruct checkpoint."""

    label: str
    suite: str
    metric: str
    op: str
    """`>=` or `<=`."""
    threshold: float
    reference_metric: str = ""
    """When set, the threshold is a multiple of this metric (TTS: 2 x the judge's reference WER)."""

    def bound(self, scores: dict) -> float | None:
        if not self.reference_metric:
            return self.threshold
        ref = scores.get(self.reference_metric)
        return None if ref is None else self.threshold * ref

    def check(self, scores: dict | None) -> dict:
        value = None if scores is None else scores.get(self.metric)
        bound = None if scores is None else self.bound(scores)
        met = None
        if value is not None and bound is not None:
            met = bool({">=": operator.ge, "<=": operator.le}[self.op](value, bound))
        interval = None if scores is None else scores.get("ci95", {}).get(self.metric)
        blind = None if scores is None else {b: s.get(self.metric) for b, s in scores.get("baselines", {}).items()}
        return {"label": self.label, "suite": self.suite, "metric": self.metric, "op": self.op,
                "bound": bound, "value": value, "ci95": interval, "baselines": blind, "met": met}


TARGETS = (
    Target("image captioning object F1", "image_captioning", "f1", ">=", 0.90),
    Target("image QA", "image_qa", "vqa_accuracy", ">=", 0.90),
    Target("text-only MCQ", "text_mcq", "accuracy", ">=", 0.60),
    Target("ASR WER (held-out voices)", "asr", "wer", "<=", 0.15),
    Target("speech understanding", "speech_understanding", "vqa_accuracy", ">=", 0.80),
    Target("video captioning (the change, nothing else)", "video_captioning", "change_f1", ">=", 0.85),
    Target("image generation fully correct", "image_generation", "judge_exact", ">=", 0.50),
    Target("image generation object F1", "image_generation", "object_f1", ">=", 0.80),
    Target("image editing", "image_editing", "judge_exact", ">=", 0.40),
    Target("video generation", "video_generation", "change_accuracy", ">=", 0.40),
    Target("storytelling pictures", "storytelling", "image_exact", ">=", 0.50),
    Target("TTS WER <= 2 x judge's reference WER", "tts", "wer", "<=", 2.0, "judge_wer_reference"),
    Target("speech-to-speech", "speech_to_speech", "answer_accuracy", ">=", 0.30),
    Target("k-shot ICL gain over the question stated in words", "icl", "gain", ">=", 0.20),
    Target("chain-of-visual-thought gain over answering directly", "covt", "gain", ">=", 0.10),
)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def numeric_leaves(data: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested metrics dict under dotted keys (`judge.wer_original`),
    leaving out the training config a tokenizer's metrics.json also records."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "config":
            out.update(numeric_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(value) -> str:
    return "-" if value is None else html.escape(format_value(value))


# ---------------------------------------------------------------- loss curves


def svg_chart(series: dict[str, list[tuple[float, float]]], title: str, x_label: str = "step") -> str:
    """A small line chart (inline SVG) of named (x, y) series on shared axes; `x_label`
    names the x axis beside its largest value."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    w, h, pad = CHART_WIDTH, CHART_HEIGHT, CHART_PAD

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(y):
        return h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    parts = [f'<svg width="{w}" height="{h + 18 * ((len(series) + 2) // 3)}" xmlns="http://www.w3.org/2000/svg" class="chart">',
             f'<text x="{pad}" y="16" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>',
             f'<text x="{pad}" y="{h - pad + 14}" font-size="11">{x0:g}</text>',
             f'<text x="{w - pad}" y="{h - pad + 14}" font-size="11" text-anchor="end">{html.escape(x_label)} {x1:g}</text>',
             f'<text x="{pad - 4}" y="{pad + 4}" font-size="11" text-anchor="end">{y1:.2f}</text>',
             f'<text x="{pad - 4}" y="{h - pad}" font-size="11" text-anchor="end">{y0:.2f}</text>']
    for k, (name, pts) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}"/>')
        lx, ly = pad + (k % 3) * 170, h + 4 + 18 * (k // 3)
        parts.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="{ly + 9}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def loss_series(records: list[dict], prefix: str) -> dict[str, list[tuple[float, float]]]:
    """Training-loss series from metrics.jsonl records: `loss_` (per modality of the
    predicted token) or `loss/` (per data type)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if "lr" not in r:  # validation records
            continue
        for key, value in r.items():
            if key.startswith(prefix):
                series.setdefault(key[len(prefix):], []).append((r["step"], value))
    return series


# ---------------------------------------------------------------- galleries


def _media_html(path: Path, root: Path) -> str:
    rel = html.escape(os.path.relpath(path, root))
    suffix = path.suffix.lower()
    if suffix in (".png", ".gif", ".jpg"):
        return f'<img src="{rel}" class="media">'
    if suffix == ".wav":
        return f'<audio controls src="{rel}"></audio>'
    if suffix == ".mp4":
        return f'<video controls loop muted src="{rel}" class="media"></video>'
    return f'<a href="{rel}">{html.escape(path.name)}</a>'


def _content_html(content, root: Path) -> str:
    if isinstance(content, str):
        return html.escape(content)
    return " ".join(" ".join(_media_html(p, root) for p in part.paths) if isinstance(part, MediaRef) else html.escape(part)
                    for part in content)


def _objects_text(objects) -> str:
    """Objects as the world's canonical caption, or `nothing`."""
    return caption(Scene(tuple(objects))) if objects else "nothing"


def _truth_scene(truth: dict, index: int) -> Scene | None:
    """The scene the `index`-th picture of a reply should show: the item's `scene`, or the
    `index`-th of its story `states`; None when the truth names none."""
    if "scene" in truth:
        return scene_from_json(truth["scene"]) if index == 0 else None
    states = truth.get("states", [])
    if index < len(states) and isinstance(states[index], dict):
        return scene_from_json(states[index])
    return None


def judge_reading(picture: Path, truth: dict) -> str:
    """What the pixel judge reads in a reply's picture (`<prefix>_image_{k:02d}.png`), beside
    the truth of the test item when it names the scene that picture should show."""
    try:
        with PILImage.open(picture) as image:
            read = read_objects(image.convert("RGB"))
        index = int(picture.stem.rsplit("_", 1)[1])
    except (OSError, ValueError) as e:
        return f"<br><i>judge could not read {html.escape(picture.name)}: {html.escape(str(e))}</i>"
    shown = f"<br><i>judge reads:</i> {html.escape(_objects_text(read))}"
    scene = _truth_scene(truth, index)
    if scene is not None:
        verdict = "right" if object_key(read) == scene.key() else "wrong"
        shown += f"<br><i>truth:</i> {html.escape(_objects_text(scene.objects))} (<b>{verdict}</b>)"
    return shown


def gallery(demo: Path, checkpoint: str, suite: str, samples: int) -> str:
    """The first `samples` test items of a suite: prompt, the checkpoint's reply (text and
    the media it wrote; under each picture what the pixel judge reads in it, beside the
    truth) and the reference reply. Replies are in test-item order."""
    replies_dir = demo / "eval" / checkpoint / "replies"
    replies = _read_jsonl(replies_dir / f"{suite}.jsonl")[:samples]
    manifest = demo / "world" / "eval" / f"{suite}.jsonl"
    if not replies or not manifest.is_file():
        return ""
    truths = {t.get("id"): t for t in _read_jsonl(demo / "world" / "eval" / f"{suite}.truth.jsonl")}
    rows = []
    for record, reply in zip(read_manifest(manifest), replies):
        messages = list(record.messages)
        reference = messages.pop()[1] if messages and messages[-1][0] == "assistant" else ""
        prompt = "<br>".join(f"<b>{role}</b>: {_content_html(c, demo)}" for role, c in messages)
        media = sorted(p for p in (replies_dir / suite).glob(f"{reply['id']}_*") if p.suffix != ".txt")
        shown = html.escape(reply["text"]) + " " + " ".join(_media_html(p, demo) for p in media)
        for picture in (p for p in media if p.suffix == ".png"):
            shown += judge_reading(picture, truths.get(reply["id"], {}))
        if "heard" in reply:
            shown += f"<br><i>Whisper heard:</i> {html.escape(reply['heard'])}"
        rows.append(f"<tr><td>{prompt}</td><td>{shown}</td><td>{_content_html(reference, demo)}</td></tr>")
    return "<table class='gallery'><tr><th>prompt</th><th>reply</th><th>reference</th></tr>" + "".join(rows) + "</table>"


# ---------------------------------------------------------------- diagnosis

DIAGNOSIS_GUIDE = (
    "A generated picture is {codes} next-token predictions and a spoken reply four layers of "
    "them; the reply is right only when its codes decode to the right content. The charts give "
    "the model's mean loss (nats) of each image code given its text, scored through the same "
    "encoder as the training data: on training items, on held-out test items, and on the same "
    "training pictures after another item's text; the flat line is a uniform guess, ln(codebook "
    "size). A gap between training and held-out items is memorisation: the model has learned "
    "those pictures, not the way from a caption to codes. A high loss on both is a floor: the "
    "codes are not predictable from the text. Where another item's text costs no more than the "
    "right one, the model does not read the text for those codes. The consistency tables say "
    "where a floor comes from: the share of identical codes when the tokenizer codes the same "
    "content under another nuisance (another background tint and jitter; the same sentence at "
    "another pitch or in another voice). Codes that change with the nuisance cannot be told by a "
    "caption, whatever the language model learns. Speech codes are compared {speech}: another "
    "pitch keeps about the same timing, another voice does not (its share is a lower bound), and "
    "the same voice twice (eSpeak is deterministic) checks the encoder."
)
SPEECH_LAYERS = ("layer 1 (content)", "layer 2 (timbre)", "layer 3 (timbre)", "layer 4 (timbre)")
LOSS_SETS = (("train", "train"), ("heldout", "held-out"), ("train_other_text", "train, another item's text"))
SPEECH_PAIRS = (("same_voice", "same voice twice"), ("other_pitch", "same voice, other pitch"),
                ("other_voice", "other training voice, same rate"))
IMAGE_CONSISTENCY = (("overall", "other tint and jitter"), ("jitter_only", "other jitter only"),
                     ("tint_only", "other tint only"))
IMAGE_PROBES = (("codes_changed_per_object_change", "codes that change when one object is replaced"),
                ("cell_information_share", "share of a code position's information about one grid cell"))


def _measured(value) -> str:
    return "not measured" if value is None else _fmt(value)


def _position_series(values: list) -> list[tuple[float, float]]:
    return [(k + 1, v) for k, v in enumerate(values) if v is not None]


def _image_loss_chart(name: str, losses: dict) -> str:
    series = {label: _position_series(losses.get(key) or []) for key, label in LOSS_SETS}
    positions = len(losses.get("train") or [])
    if positions and losses.get("uniform") is not None:
        series["uniform guess"] = [(1, losses["uniform"]), (positions, losses["uniform"])]
    return svg_chart(series, f"{name}: loss of each image code given the text", x_label="code position")


def _image_loss_table(checkpoints: dict) -> str:
    rows = []
    for name, result in checkpoints.items():
        losses = result.get("image_code_loss", {})
        prompt = losses.get("prompt_text_loss", {})
        cells = "".join(f"<td>{_fmt(losses.get(f'{key}_mean'))}</td>" for key, _ in LOSS_SETS)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}<td>{_fmt(losses.get('uniform'))}</td>"
                    f"<td>{_fmt(prompt.get('train'))} / {_fmt(prompt.get('heldout'))}</td>"
                    f"<td>{_fmt(losses.get('n', {}).get('train'))} / {_fmt(losses.get('n', {}).get('heldout'))}</td></tr>")
    head = "".join(f"<th>{label}</th>" for _, label in LOSS_SETS)
    return ("<table><tr><th>image codes, mean loss</th>" + head + "<th>uniform guess</th>"
            "<th>prompt text (train / held-out)</th><th>items (train / held-out)</th></tr>" + "".join(rows) + "</table>")


def _speech_loss_table(checkpoints: dict) -> str:
    rows = []
    for name, result in checkpoints.items():
        losses = result.get("speech_code_loss", {})
        for key, label in LOSS_SETS:
            cells = "".join(f"<td>{_fmt(v)}</td>" for v in losses.get(key) or [])
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{label}</td>{cells}</tr>")
    uniform = next((r.get("speech_code_loss", {}).get("uniform") for r in checkpoints.values()), None)
    head = "".join(f"<th>{label}</th>" for label in SPEECH_LAYERS)
    return (f"<table><tr><th>speech codes, mean loss</th><th>set</th>{head}</tr>" + "".join(rows) + "</table>"
            f"<p>A uniform guess costs {_fmt(uniform)} per speech code.</p>")


def _consistency_tables(consistency: dict) -> str:
    image = consistency.get("image") or {}
    image_rows = "".join(f"<tr><td>{label}</td><td>{_measured(image.get(key))}</td></tr>" for key, label in IMAGE_CONSISTENCY)
    probes = "; ".join(f"{label}: {_measured(image.get(key))}" for key, label in IMAGE_PROBES)
    source = f" (from {html.escape(image['source'])})" if image.get("source") else ""
    speech = consistency.get("speech") or {}
    speech_rows = []
    for key, label in SPEECH_PAIRS:
        values = speech.get(key)
        cells = "".join(f"<td>{_fmt(v)}</td>" for v in values) if values else "<td>not measured</td>"
        speech_rows.append(f"<tr><td>{label}</td>{cells}</tr>")
    head = "".join(f"<th>{label}</th>" for label in SPEECH_LAYERS)
    return (f"<h3>Tokenizer consistency: share of identical codes for the same content</h3>"
            f"<table><tr><th>image: same scene, ...{source}</th><th>share</th></tr>{image_rows}</table>"
            f"<p>Image tokenizer: {html.escape(probes)}.</p>"
            f"<table><tr><th>speech: same sentence, ...</th>{head}</tr>{''.join(speech_rows)}</table>")


EDIT_SETS = (("train", "training edits"), ("heldout", "test edits"))
EDIT_CLASS_LABELS = (("kept_common", "kept, the position's usual code"), ("kept_rare", "kept, an object's code"),
                     ("kept_unseen", "kept, an unseen combination's code"), ("changed", "changed by the edit"))
EDIT_GUIDE = (
    "An edit is mostly a copy: every code of the source picture that the instruction does not "
    "touch must come back at the same position. Each cell is the share of codes whose most "
    "likely prediction, given the true codes before it (teacher forcing), is right, with the "
    "mean loss in nats; by class of code: kept and equal to the code most sources have at that "
    "position (an empty cell), kept otherwise (the objects the edit leaves alone), kept and of "
    "an object whose colour-shape combination was never drawn in training, and changed (the "
    "edit itself). 'copied instead' is the share of changed codes where the model's top "
    "code is the source's; 'all right' the share of edits whose every top code is right."
)


def _edit_copy_table(checkpoints: dict) -> str:
    rows = []
    for name, result in checkpoints.items():
        edits = result.get("edit_copy")
        if not edits:
            continue
        for key, label in EDIT_SETS:
            stats = edits.get(key) or {}
            cells = "".join(f"<td>{_fmt((stats.get(c) or {}).get('accuracy'))} "
                            f"({_fmt((stats.get(c) or {}).get('loss'))}, n={_fmt((stats.get(c) or {}).get('n'))})</td>"
                            for c, _ in EDIT_CLASS_LABELS)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{label}</td>{cells}"
                        f"<td>{_fmt(stats.get('changed_predicted_source'))}</td>"
                        f"<td>{_fmt(stats.get('all_codes_right'))}</td><td>{_fmt(stats.get('items'))}</td></tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{label}</th>" for _, label in EDIT_CLASS_LABELS)
    return (f"<h3>Image editing under teacher forcing: the copy or the change</h3><p>{html.escape(EDIT_GUIDE)}</p>"
            f"<table><tr><th>checkpoint</th><th>set</th>{head}<th>copied instead</th><th>all right</th>"
            f"<th>edits</th></tr>{''.join(rows)}</table>")


def diagnosis_section(diagnosis: dict) -> str:
    """The report's "Diagnosis: why generation is hard" section from `diagnosis.json`
    (`mio.eval.diagnosis.diagnose`); empty when there is none."""
    checkpoints = diagnosis.get("checkpoints") or {}
    if not checkpoints:
        return ""
    codes = next((len(r.get("image_code_loss", {}).get("train") or []) for r in checkpoints.values()), 0)
    speech = (diagnosis.get("consistency", {}).get("speech") or {}).get("compared", "frame by frame")
    parts = ["<h2>Diagnosis: why generation is hard</h2>",
             f"<p>{html.escape(DIAGNOSIS_GUIDE.format(codes=codes or 'many', speech=speech))}</p>"]
    parts += [_image_loss_chart(name, r.get("image_code_loss", {})) for name, r in checkpoints.items()]
    parts += [_image_loss_table(checkpoints), _speech_loss_table(checkpoints), _edit_copy_table(checkpoints),
              _consistency_tables(diagnosis.get("consistency") or {})]
    return "".join(parts)


# ---------------------------------------------------------------- the page

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
.met { background: #e6f4e6; } .missed { background: #fbe9e9; }
img.media, video.media { width: 96px; image-rendering: pixelated; margin: 2px; }
.gallery td { max-width: 380px; }
.chart { margin: 0 1em 1em 0; }
"""


def _metric_table(checkpoints: dict[str, dict]) -> str:
    suites = list(dict.fromkeys(s for result in checkpoints.values() for s in result.get("suites", {})))
    head = "".join(f"<th>{c}</th>" for c in checkpoints)
    rows = []
    for suite in suites:
        cells = []
        for result in checkpoints.values():
            scores = result.get("suites", {}).get(suite)
            reason = result.get("skipped", {}).get(suite)
            if scores is None:
                cells.append(f"<td><i>{html.escape(reason or 'not run')}</i></td>")
            else:
                lines = [f"<b>{html.escape(headline(suite, scores))}</b>",
                         f"blind: {html.escape(baseline_summary(suite, scores) or '-')}"]
                lines += [f"{html.escape(k)}: {_fmt(v)}" for k, v in scores.items() if k not in ("ci95", "baselines")]
                cells.append("<td>" + "<br>".join(lines) + "</td>")
        rows.append(f"<tr><td>{suite}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>suite</th>{head}</tr>{''.join(rows)}</table>"


def _target_table(targets: list[dict]) -> str:
    rows = []
    for t in targets:
        css = {True: "met", False: "missed"}.get(t["met"], "")
        verdict = {True: "met", False: "missed"}.get(t["met"], "not measured")
        interval = f" [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]" if t.get("ci95") else ""
        blind = ", ".join(f"{b} {_fmt(v)}" for b, v in (t.get("baselines") or {}).items())
        rows.append(f"<tr class='{css}'><td>{html.escape(t['label'])}</td><td>{t['suite']}.{t['metric']}</td>"
                    f"<td>{t['op']} {_fmt(t['bound'])}</td><td>{_fmt(t['value'])}{interval}</td>"
                    f"<td>{html.escape(blind)}</td><td>{verdict}</td></tr>")
    return ("<table><tr><th>target</th><th>metric</th><th>bound</th><th>instruct [95% interval]</th>"
            "<th>blind baselines</th><th></th></tr>" + "".join(rows) + "</table>")


def write_report(demo: str | Path, preset: str, run_dirs: list[str], samples: int = 4) -> tuple[Path, Path]:
    """Write `report.html` and `metrics.json` into the demo directory; returns their paths."""
    demo = Path(demo)
    state = _read_json(demo / "demo_state.json")
    steps = {name: info["seconds"] for name, info in state.get("steps", {}).items()}
    checkpoints = {c: _read_json(demo / "eval" / c / "metrics.json") for c in CHECKPOINTS}
    instruct = checkpoints["instruct"].get("suites", {})
    targets = [t.check(instruct.get(t.suite)) for t in TARGETS]
    tokenizers = {kind: _read_json(demo / "tokenizers" / kind / "metrics.json") for kind in ("image", "speech")}
    diagnosis = _read_json(demo / DIAGNOSIS_FILE)
    metrics = {
        "preset": preset,
        "checkpoints": checkpoints,
        "targets": targets,
        "steps": steps,
        "total_seconds": round(sum(steps.values()), 1),
        "tokenizers": {k: numeric_leaves(t) for k, t in tokenizers.items()},
        "diagnosis": diagnosis,
    }
    metrics_path = demo / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1))

    body = [f"<h1>MIO demo ({html.escape(preset)} preset)</h1>",
            f"<p>Total step time {sum(steps.values()) / 60:.1f} min. "
            "Machine-readable: <a href='metrics.json'>metrics.json</a>.</p>",
            "<h2>Steps</h2><table><tr><th>step</th><th>seconds</th></tr>"
            + "".join(f"<tr><td>{n}</td><td>{s:.1f}</td></tr>" for n, s in steps.items()) + "</table>",
            "<h2>Quality targets (instruct checkpoint)</h2>", _target_table(targets),
            "<h2>Evaluation: base (after Stage III) and instruct (after SFT)</h2>", _metric_table(checkpoints),
            "<h2>Tokenizers</h2><table><tr><th>tokenizer</th><th>held-out metrics</th></tr>"
            + "".join(f"<tr><td>{k}</td><td>" + ", ".join(f"{m} {_fmt(t[m])}" for m in TOKENIZER_HEADLINES[k] if m in t)
                      + "</td></tr>" for k, t in metrics["tokenizers"].items()) + "</table>",
            "<h2>Training loss (the paper's Figure 2)</h2>"]
    for run_dir in run_dirs:
        records = _read_jsonl(Path(run_dir) / "metrics.jsonl")
        name = Path(run_dir).name
        body.append(svg_chart(loss_series(records, "loss_"), f"{name}: loss by modality of the predicted token"))
        body.append(svg_chart(loss_series(records, "loss/"), f"{name}: loss by data type"))
    body.append(diagnosis_section(diagnosis))
    for checkpoint in CHECKPOINTS:
        suites = checkpoints[checkpoint].get("suites", {})
        if not suites:
            continue
        body.append(f"<h2>Gallery: {checkpoint}</h2>")
        for suite in suites:
            table = gallery(demo, checkpoint, suite, samples)
            if table:
                body.append(f"<h3>{suite}</h3>{table}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>MIO demo</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>")
    report_path = demo / "report.html"
    report_path.write_text(page)
    return report_path, metrics_path
