"""Evaluation metrics: CIDEr, VQA normalisation and accuracy, WER, MCQ letters, SSIM,
caption attributes, and the prompt templates."""

from __future__ import annotations

import random

import pytest

from mio.eval import metrics
from mio.prompts import BASE_TEMPLATES, INSTRUCTIONS, base_prompt, instruction
from mio.segments import Image, Speech, Text
from mio.toyworld.scenes import Scene, SceneObject, SceneSampler, caption, render


def test_cider_prefers_the_right_caption():
    refs = [["A big red circle at the top left."], ["A small blue square in the center."], ["A green cross at the bottom right."]]
    right = metrics.cider(
        refs, ["a big red circle at the top left", "a small blue square in the center", "a green cross at the bottom right"]
    )
    wrong = metrics.cider(
        refs, ["a small blue square in the center", "a green cross at the bottom right", "a big red circle at the top left"]
    )
    assert right > 1.0 > wrong >= 0.0
    with pytest.raises(ValueError):
        metrics.cider(refs, ["x"])


@pytest.mark.parametrize("raw, expected", [
    ("Two.", "2"), ("The red circle", "red circle"), ("yes!", "yes"), ("top-left", "top left"),
    ("1,000", "1000"), ("3.5", "3.5"), ("  Dont  ", "don't"), ("an orange", "orange"),
])
def test_vqa_normalisation(raw, expected):
    assert metrics.normalize_answer(raw) == expected


def test_vqa_accuracy_single_and_many_answers():
    assert metrics.vqa_accuracy("Two", ["2"]) == 1.0
    assert metrics.vqa_accuracy("three", ["2"]) == 0.0
    assert metrics.vqa_accuracy("2", ["2"] * 2 + ["3"] * 8) == pytest.approx(0.6)
    assert metrics.vqa_accuracy("2", ["2"] * 4 + ["3"] * 6) == 1.0


def test_answer_extraction_and_mcq_letters():
    assert metrics.extract_answer("I see two. The answer is 2.", "The answer is") == "2"
    assert metrics.extract_answer("2", "The answer is") == "2"
    assert metrics.mcq_letter("B") == "B" and metrics.mcq_letter("Answer: C. 7") == "C"
    assert metrics.mcq_letter("none of them") is None


def test_wer_uses_whisper_normalisation():
    assert metrics.wer(["The answer is 7."], ["the answer is seven"]) == 0.0
    assert metrics.wer(["a red circle"], ["a blue circle"]) == pytest.approx(1 / 3)
    assert metrics.wer(["a red circle"], [""]) == 1.0


def test_ssim_of_renders():
    a, b = SceneSampler(seed=1).sample(), SceneSampler(seed=2).sample()
    assert metrics.ssim(render(a), render(a)) == pytest.approx(1.0)
    assert metrics.ssim(render(a, 32), render(a)) > metrics.ssim(render(b), render(a))


def test_every_caption_phrasing_parses_back_to_its_scene():
    rng = random.Random(0)
    for _ in range(100):
        scene = SceneSampler(seed=rng.randrange(10**6)).sample()
        for seed in (None, rng.randrange(1000), rng.randrange(1000)):
            score = metrics.attribute_accuracy(scene.objects, caption(scene, seed=seed))
            assert score == {"attributes": 1.0, "exact": 1.0}, caption(scene, seed=seed)


def test_attribute_accuracy_gives_partial_credit():
    scene = Scene((SceneObject("circle", "red", "big", 0, 0), SceneObject("cross", "blue", "small", 1, 1)))
    half = metrics.attribute_accuracy(scene.objects, "A big red circle at the top left.")
    assert half == {"attributes": 0.5, "exact": 0.0}  # one of two objects, fully right
    assert metrics.attribute_accuracy(scene.objects, "nothing here") == {"attributes": 0.0, "exact": 0.0}


def test_prompts():
    assert instruction("image_captioning") == "Provide a one-sentence caption for the provided image."
    assert "What colour?" in instruction("image_qa", question="What colour?")
    assert set(BASE_TEMPLATES) <= set(INSTRUCTIONS)
    image = Image()
    assert base_prompt("image_caption", image) == [image, Text(" The caption of this image is:")]
    assert base_prompt("video_caption", image) == [Text("Please describe the following video: "), image]
    speech = Speech()
    assert base_prompt("asr", speech) == [speech, Text(" Transcribe this speech:")]
    assert base_prompt("image_generation", text="a red circle") == [Text("Please generate an image of ``a red circle'': ")]
    with pytest.raises(ValueError):
        base_prompt("asr")
