"""The procedural scene renderer and the pixel-level judge that reads scenes back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import ImageFilter

from mio.judges import image as image_judge
from mio.toyworld.scenes import (
    CANONICAL_BACKGROUND,
    COLORS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    canonical,
    caption,
    render,
    sample_scenes,
    with_nuisance,
)


def test_render_is_deterministic_and_varied():
    scenes = sample_scenes(50, seed=3)
    assert [s.key() for s in scenes] == [s.key() for s in sample_scenes(50, seed=3)]
    images = [np.asarray(render(s)) for s in scenes]
    assert all(np.array_equal(a, np.asarray(render(s))) for a, s in zip(images, scenes))
    assert len({a.tobytes() for a in images}) == len(images)  # no two renders identical
    assert images[0].shape == (64, 64, 3)
    assert render(scenes[0], image_size=96).size == (96, 96)


def test_sampler_covers_the_attribute_space():
    objects = [o for s in sample_scenes(400, seed=0) for o in s.objects]
    assert {o.shape for o in objects} == set(SHAPES) and len(SHAPES) >= 4
    assert {o.color for o in objects} == set(COLORS) and len(COLORS) >= 6
    assert {o.size for o in objects} == set(SIZES)
    assert {(o.row, o.col) for o in objects} == {(r, c) for r in range(3) for c in range(3)}
    assert {len(s.objects) for s in sample_scenes(100, seed=0)} == {1, 2, 3}


def test_caption_names_every_object_in_several_phrasings():
    scene = Scene((SceneObject("circle", "red", "big", 0, 0), SceneObject("cross", "blue", "small", 1, 1)))
    text = caption(scene)
    assert "big red circle" in text and "top left" in text
    assert "small blue cross" in text and "center" in text
    assert len({caption(scene, seed=i) for i in range(30)}) >= 3


def test_judge_is_exact_on_ground_truth_renders():
    report = image_judge.validate(n=200, seed=2024)
    assert report["n"] == 200
    assert report["exact"] >= 0.99, report


def test_judge_tolerates_mild_blur_and_reports_mismatches():
    scenes = sample_scenes(40, seed=9)
    blurred = [render(s).filter(ImageFilter.GaussianBlur(0.6)) for s in scenes]
    assert image_judge.score(scenes, blurred)["exact"] >= 0.9
    # A scene read against the wrong truth is not exact.
    wrong = image_judge.score(scenes[1:] + scenes[:1], [render(s) for s in scenes])
    assert wrong["exact"] < 0.2
    with pytest.raises(ValueError):
        image_judge.score(scenes, blurred[:3])


def test_canonical_scene_keeps_the_objects_on_the_fixed_background_without_jitter():
    scenes = sample_scenes(20, seed=5)
    for scene in scenes:
        fixed = canonical(scene)
        assert fixed.objects == scene.objects
        assert fixed.background == CANONICAL_BACKGROUND and fixed.jitter_seed is None
        image = np.asarray(render(fixed))
        assert tuple(image[0, 0]) == CANONICAL_BACKGROUND
        # Any nuisance render of the scene has the same canonical render.
        other = with_nuisance(scene, seed=1)
        assert np.array_equal(np.asarray(render(canonical(other))), image)
        assert image_judge.object_key(image_judge.read_objects(render(fixed))) == scene.key()
    # No jitter: a square in the centre cell sits exactly in the middle of the image.
    square = canonical(Scene((SceneObject("square", "red", "big", 1, 1),), jitter_seed=123))
    rows, cols = np.nonzero(np.asarray(render(square))[:, :, 1] < 100)
    assert rows.min() + rows.max() == cols.min() + cols.max() == 63


def test_with_nuisance_redraws_only_what_it_is_asked_to():
    scene = sample_scenes(1, seed=6)[0]
    both, jitter, tint = (with_nuisance(scene, 4, b, j) for b, j in ((True, True), (False, True), (True, False)))
    assert both.objects == jitter.objects == tint.objects == scene.objects
    assert both.background != scene.background and both.jitter_seed != scene.jitter_seed
    assert jitter.background == scene.background and jitter.jitter_seed != scene.jitter_seed
    assert tint.background != scene.background and tint.jitter_seed == scene.jitter_seed
    assert with_nuisance(scene, 4) == both  # deterministic given the seed
