"""The diagnosis of why generation is hard (`mio.eval.diagnosis`) and its report section: code
losses are per code of the target medium only, the consistency probes give 1.0 for identical
inputs, and the report shows the section when `diagnosis.json` exists and leaves it out when not."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from conftest import SMALL_LAYOUT, make_run_dir
from mio.data.encode import Sample, encode_sample
from mio.demo import report
from mio.eval import diagnosis
from mio.segments import Image, Message, Speech, Text
from mio.toyworld.scenes import Scene, SceneObject, render
from mio.toyworld.speech_synth import voice_pool
from mio.toyworld.tasks import scene_to_json

pytestmark = pytest.mark.usefixtures("one_thread")

ITEMS = 2
SPEECH_FRAMES = 5


@pytest.fixture(scope="module")
def world(tiny_world) -> Path:
    return tiny_world


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, text_tokenizer) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer, positions=2048, context_length=2048)


@pytest.fixture(scope="module")
def model(run_dir):
    from mio.api import MIO

    return MIO.from_pretrained(run_dir, device="cpu")


def _image_pair(caption: str, seed: int = 0) -> Sample:
    codes = torch.randint(SMALL_LAYOUT.image_codebook_size, (SMALL_LAYOUT.tokens_per_image,),
                          generator=torch.Generator().manual_seed(seed))
    return Sample("image_text_pair", segments=[Image(codes=codes), Text(caption)])


def _tts_chat(text: str) -> Sample:
    codes = torch.randint(SMALL_LAYOUT.speech_codebook_size, (SMALL_LAYOUT.speech_layers, SPEECH_FRAMES),
                          generator=torch.Generator().manual_seed(1))
    return Sample("sft", messages=[Message("user", f"Please read the following text aloud: {text}"),
                                             Message("assistant", [Speech(codes=codes)])], mode="voice", task="tts")


def test_code_losses_have_one_value_per_code_position_and_speech_layer(model, world):
    for base in (True, False):
        result = diagnosis.code_losses(model, world, base=base, limit=ITEMS)
        image, speech = result["image_code_loss"], result["speech_code_loss"]
        for name in ("train", "heldout", "train_other_text"):
            assert len(image[name]) == SMALL_LAYOUT.tokens_per_image
            assert len(speech[name]) == SMALL_LAYOUT.speech_layers
            assert all(math.isfinite(v) and v > 0 for v in image[name] + speech[name])
            assert math.isfinite(image[f"{name}_mean"]) and math.isfinite(speech[f"{name}_mean"])
            assert image["n"][name] == ITEMS and image["left_out"][name] == 0
        assert set(image["prompt_text_loss"]) == {"train", "heldout"}
        assert image["uniform"] == pytest.approx(math.log(SMALL_LAYOUT.image_codebook_size))


def test_only_the_target_codes_are_scored_at_the_right_offsets(model):
    short, long = _image_pair("a"), _image_pair("a big red circle at the top left and a small blue square", seed=0)
    (scored_short, scored_long), _ = diagnosis.score_documents(model, [short, long])
    # Sorted by length: the short caption first. The caption's length changes the prompt, not the target.
    assert len(scored_short.target) == len(scored_long.target) == SMALL_LAYOUT.tokens_per_image
    assert len(scored_long.prompt) > len(scored_short.prompt)

    # The losses are those of the model's own logits at the codes of the image block.
    doc = encode_sample(long, model.vocab, diagnosis.generation_encoding(model), random.Random(0))
    start, end = diagnosis.target_span(doc.ids, model.vocab)
    lo, hi = model.vocab.image_range
    assert all(lo <= t < hi for t in doc.ids[start:end]) and doc.ids[start - 1] == model.vocab.image_start
    with torch.no_grad():
        logits = model.model(input_ids=torch.tensor([doc.ids])).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[start - 1:end - 1], torch.tensor(doc.ids[start:end]))
    assert sum(scored_long.target) / len(scored_long.target) == pytest.approx(expected.item(), rel=1e-4)


def test_speech_targets_are_the_four_layer_blocks_of_the_reply(model):
    (scored,), left_out = diagnosis.score_documents(model, [_tts_chat("a red circle")])
    assert left_out == 0 and len(scored.target) == SMALL_LAYOUT.speech_layers * SPEECH_FRAMES
    layers = diagnosis.layer_means([scored], SMALL_LAYOUT.speech_layers)
    for layer, mean in enumerate(layers):
        block = scored.target[layer * SPEECH_FRAMES:(layer + 1) * SPEECH_FRAMES]
        assert mean == pytest.approx(sum(block) / SPEECH_FRAMES)


def test_a_model_that_ignores_its_input_costs_ln_of_its_vocabulary_on_every_code(model):
    head = model.model.get_output_embeddings().weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head.zero_()  # every logit 0: a uniform guess over the rows
        (scored,), _ = diagnosis.score_documents(model, [_image_pair("a red circle")])
    finally:
        with torch.no_grad():
            head.copy_(saved)
    assert scored.target == pytest.approx([math.log(head.shape[0])] * SMALL_LAYOUT.tokens_per_image)


def test_other_text_keeps_each_target_and_takes_the_next_prompt():
    pairs = [_image_pair("first", 0), _image_pair("second", 1)]
    swapped = diagnosis.with_other_text(pairs)
    assert [s.segments[1].text for s in swapped] == ["second", "first"]
    assert all(torch.equal(a.segments[0].codes, b.segments[0].codes) for a, b in zip(pairs, swapped))
    chats = [_tts_chat("one"), _tts_chat("two")]
    swapped = diagnosis.with_other_text(chats)
    assert swapped[0].messages[0].content.endswith("two") and swapped[0].messages[1] is chats[0].messages[1]


def test_consistency_is_one_for_identical_inputs(model):
    same = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert diagnosis.share_equal(same, same) == [1.0, 1.0]
    assert diagnosis.share_equal(same, torch.tensor([[1, 2], [0, 5]])) == [1.0, 0.5]  # over the shorter length
    # Scenes whose nuisance is all alike render identically under each other's nuisance.
    scenes = [Scene((SceneObject("circle", "red", "big", r, c),)) for r, c in ((0, 0), (1, 2), (2, 1))]
    image = diagnosis.image_consistency(model.image_tokenizer, scenes, 32)
    assert image["overall"] == 1.0 and image["per_position"] == [1.0] * SMALL_LAYOUT.tokens_per_image
    voices = voice_pool(2, 0)[0]
    speech = diagnosis.speech_consistency(model.speech_tokenizer, ["a red circle"], voices)
    assert speech["same_voice"] == [1.0] * SMALL_LAYOUT.speech_layers  # eSpeak is deterministic
    assert all(0.0 <= v <= 1.0 for v in speech["other_pitch"] + speech["other_voice"])


def test_the_image_tokenizers_own_consistency_is_read_in_either_form():
    assert diagnosis.tokenizer_image_consistency({"psnr": 20.0}) is None
    flat = diagnosis.tokenizer_image_consistency({"consistency": 0.5, "consistency_per_position": [0.5],
                                                  "consistency_jitter": 0.75, "codes_changed_per_object_change": 3.0})
    assert flat["overall"] == 0.5 and flat["jitter_only"] == 0.75 and flat["tint_only"] is None
    assert flat["codes_changed_per_object_change"] == 3.0
    nested = diagnosis.tokenizer_image_consistency({"consistency": {"overall": 0.25, "per_position": [0.25]}})
    assert nested["overall"] == 0.25 and "source" in nested


def test_diagnose_writes_every_measurement(model, run_dir, world):
    result = diagnosis.diagnose(world, {"base": (run_dir, True), "instruct": (run_dir, False)}, limit=ITEMS,
                                device="cpu")
    assert set(result["checkpoints"]) == {"base", "instruct"}
    # Editing is taught in SFT: only the instruction-tuned checkpoint's edits are scored.
    edits = result["checkpoints"]["instruct"]["edit_copy"]
    assert "edit_copy" not in result["checkpoints"]["base"]
    for name in ("train", "heldout"):
        assert sum(edits[name][c]["n"] for c in diagnosis.EDIT_CLASSES) == \
            edits[name]["items"] * SMALL_LAYOUT.tokens_per_image > 0
    assert result["consistency"]["image"]["source"] == "diagnosis"
    assert len(result["consistency"]["speech"]["other_voice"]) == SMALL_LAYOUT.speech_layers
    json.dumps(result)  # what the demo saves


def _fake_diagnosis() -> dict:
    losses = {"train": [1.0, 2.0], "heldout": [2.0, 3.0], "train_other_text": [1.5, 2.5], "train_mean": 1.5,
              "heldout_mean": 2.5, "train_other_text_mean": 2.0, "uniform": 4.0, "n": {"train": 2, "heldout": 2},
              "prompt_text_loss": {"train": 0.5, "heldout": 0.7}}
    speech = {**losses, "train": [1.0, 5.0, 5.0, 5.0], "heldout": [2.0, 5.0, 5.0, 5.0],
              "train_other_text": [1.5, 5.0, 5.0, 5.0]}
    kept = {"n": 10, "accuracy": 0.5, "loss": 1.0}
    edits = {"train": {**{c: kept for c in diagnosis.EDIT_CLASSES}, "changed_predicted_source": 0.25,
                       "all_codes_right": 0.375, "items": 2}}
    return {"checkpoints": {"base": {"image_code_loss": losses, "speech_code_loss": speech},
                            "instruct": {"image_code_loss": losses, "speech_code_loss": speech, "edit_copy": edits}},
            "consistency": {"image": {"overall": 0.125, "source": "diagnosis"},
                            "speech": {"same_voice": [1.0] * 4, "other_pitch": [0.4, 0.1, 0.1, 0.0],
                                       "other_voice": [0.1, 0.0, 0.0, 0.0], "compared": "frame by frame"}}}


def test_the_report_shows_the_diagnosis_when_there_is_one(tmp_path):
    report.write_report(tmp_path, "smoke", [])
    assert "Diagnosis: why generation is hard" not in (tmp_path / "report.html").read_text()
    (tmp_path / diagnosis.DIAGNOSIS_FILE).write_text(json.dumps(_fake_diagnosis()))
    report.write_report(tmp_path, "smoke", [])
    page = (tmp_path / "report.html").read_text()
    assert "Diagnosis: why generation is hard" in page and "code position" in page
    assert "layer 1 (content)" in page and "0.125" in page
    assert "not measured" in page  # the tokenizer's other probes were not there
    assert "the copy or the change" in page and "0.375" in page
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["diagnosis"]["consistency"]["image"]["overall"] == 0.125


def test_the_gallery_says_what_the_judge_reads_beside_the_truth(tmp_path):
    scene = Scene((SceneObject("circle", "red", "big", 2, 1),))
    picture = tmp_path / "image_generation-000000_image_00.png"
    render(scene, 64).save(picture)
    shown = report.judge_reading(picture, {"scene": scene_to_json(scene)})
    assert "A big red circle at the bottom center." in shown and "right" in shown
    other = Scene((SceneObject("square", "blue", "small", 0, 0),))
    assert "wrong" in report.judge_reading(picture, {"scene": scene_to_json(other)})
    assert "truth" not in report.judge_reading(picture, {})
    broken = tmp_path / "image_generation-000001_image_00.png"
    broken.write_text("not a picture")
    assert "could not read" in report.judge_reading(broken, {})


def test_edit_codes_are_classed_as_kept_or_changed_and_scored_by_the_top_prediction():
    edit = diagnosis.EditCodes(source=[0, 0, 5, 6, 9], target=[0, 0, 5, 7, 9], predicted=[0, 1, 5, 6, 8],
                               losses=[0.1, 2.0, 0.3, 1.0, 3.0], item=0)
    stats = diagnosis.edit_class_stats([edit], common=[0, 0, 0, 0, 0], cells=[0, 0, 1, 1, 2], unseen={0: {1}})
    assert stats["kept_common"] == {"n": 2, "accuracy": 0.5, "loss": pytest.approx(1.05)}
    assert stats["kept_unseen"] == {"n": 1, "accuracy": 1.0, "loss": pytest.approx(0.3)}  # cell 1 holds an unseen combination
    assert stats["kept_rare"] == {"n": 1, "accuracy": 0.0, "loss": pytest.approx(3.0)}
    assert stats["changed"]["accuracy"] == 0.0 and stats["changed_predicted_source"] == 1.0  # it copied the 6
    assert stats["all_codes_right"] == 0.0 and stats["items"] == 1
    # Without grid cells (another tokenizer) every kept object code is `kept_rare`.
    plain = diagnosis.edit_class_stats([edit], common=[0] * 5, cells=None, unseen={0: {1}})
    assert plain["kept_unseen"]["n"] == 0 and plain["kept_rare"]["n"] == 2


def test_edits_are_scored_at_the_reply_codes_against_the_source_codes(model):
    lo = model.vocab.image_range[0]
    source = torch.arange(SMALL_LAYOUT.tokens_per_image) % SMALL_LAYOUT.image_codebook_size
    target = source.clone()
    target[1] = (target[1] + 1) % SMALL_LAYOUT.image_codebook_size
    chat = Sample("sft", messages=[Message("user", [Text("Make it so."), Image(codes=source)]),
                                   Message("assistant", [Image(codes=target)])], task="image_editing")
    (edit,) = diagnosis.score_edits(model, [chat])
    assert edit.source == [lo + c for c in source.tolist()] and edit.target == [lo + c for c in target.tolist()]
    doc = encode_sample(chat, model.vocab, diagnosis.generation_encoding(model), random.Random(0))
    start, end = diagnosis.target_span(doc.ids, model.vocab)
    with torch.no_grad():
        logits = model.model(input_ids=torch.tensor([doc.ids])).logits[0, start - 1:end - 1]
    assert edit.predicted == logits.argmax(-1).tolist()
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(doc.ids[start:end]), reduction="none")
    assert edit.losses == pytest.approx(expected.tolist(), rel=1e-4)
    # A chat with one picture has nothing to copy from: left out.
    assert diagnosis.score_edits(model, [_tts_chat("a red circle")]) == []
