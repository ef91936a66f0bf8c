"""The embedded world's configuration and its train / held-out split.

`WorldConfig` sizes every part of the corpus `mio toyworld` builds (pre-training data
types, SFT tasks, evaluation suites) and fixes the two held-out splits that test
generalisation:

- attribute combinations: a few (colour, shape) pairs never appear in any image the model
  is trained to *generate* (image-text pairs, interleaved documents, videos, generation and
  editing targets); they still appear in images the model only reads (captioning, QA), so
  the test asks the model to draw something it can name but never drew;
- voices: eSpeak voices (`mio.toyworld.speech_synth.voice_pool`) split into training and
  held-out ones; every test utterance is spoken by a held-out voice.

And every test item is held out by construction (`HeldOut`): a seeded hash reserves a share
(`heldout_share`) of each key space for test items: scenes (their object sets, `Scene.key`),
questions (`mio.toyworld.text.question_keys`: the normalised question, an arithmetic fact
keyed as its question) and charts (their bars). Test items are drawn only from the reserved
parts, training items (pre-training documents and SFT conversations) only from the rest,
so no test scene, clip state, question, chart or utterance occurs in training.
`mio.toyworld.overlap` checks the written corpus for it at the end of every build.

Everything drawn from the world is seeded per item (`item_rng`), so an item does not
depend on how many items came before it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from mio.toyworld.scenes import COLORS, SHAPES, Scene, SceneSampler
from mio.toyworld.speech_synth import Voice, voice_pool
from mio.toyworld.text import HOLDABLE_KINDS

# Rejection sampling gives up after this many draws (only reachable with a config that
# holds out nearly every combination, or a heldout_share near 0 or 1).
MAX_DRAWS = 1000


# The SFT tasks a world builds (each a builder in `tasks.SFT_TASKS`, in this order): Table 10's
# tasks as toyworld analogues, chain of visual thought and speech-to-speech.
SFT_TASK_NAMES = (
    "language", "icl", "mcot", "chart", "image_editing", "asr", "video_dialogue", "image_qa", "speech_generation",
    "speech_understanding", "image_captioning", "image_generation", "tts", "video_generation", "video_understanding",
    "video_captioning", "storytelling", "covt", "covt_direct", "speech_to_speech",
)
# The evaluation suites a world builds (each a builder in `tasks.EVAL_SUITES`, in this order).
EVAL_SUITE_NAMES = (
    "text_mcq", "image_captioning", "image_qa", "image_generation", "image_editing", "asr", "tts", "speech_understanding",
    "speech_generation", "speech_to_speech", "video_captioning", "video_understanding", "video_generation", "storytelling",
    "covt", "icl", "mcot", "chart",
)


@dataclass
class WorldConfig:
    """What `mio toyworld` builds. Counts are items per data type, task or suite."""

    out_dir: str = "data/toyworld"
    """Where the corpus is written (`--out` overrides)."""
    seed: int = 0
    """Seed of everything drawn; the same seed gives the same corpus."""
    image_size: int = 64
    """Side of rendered scenes, charts and video frames, in pixels."""
    image_text_pairs: int = 3000
    """Pre-training image-text pairs (a scene and one of its caption phrasings)."""
    language_docs: int = 2000
    """Pre-training language-only documents (facts, counting, colour mixing, arithmetic, MCQ)."""
    interleaved_docs: int = 400
    """Pre-training image-text interleaved documents (multi-scene stories)."""
    video_pairs: int = 400
    """Pre-training video-text pairs (an MP4 clip and its description)."""
    video_interleaved_docs: int = 200
    """Pre-training video-text interleaved documents (keyframes with narration)."""
    speech_pairs: int = 600
    """Pre-training speech-text pairs (utterances by training voices)."""
    sft_per_task: int = 120
    """SFT conversations per task."""
    sft_task_counts: dict[str, int] = field(default_factory=dict)
    """Per-task overrides of `sft_per_task`, e.g. {image_generation = 300}."""
    eval_per_suite: int = 40
    """Test items per evaluation suite."""
    eval_suite_counts: dict[str, int] = field(default_factory=dict)
    """Per-suite overrides of `eval_per_suite`, e.g. {text_mcq = 200}."""
    heldout_share: float = 0.3
    """Share of every key space (scenes, questions, charts) reserved for test items: test items
    are drawn from it, training items from the rest (`HeldOut`). A suite asking for more
    distinct items than its reserved part holds is an error."""
    heldout_combos: list[str] = field(
        default_factory=lambda: ["red triangle", "green cross", "blue square", "yellow circle"]
    )
    """`colour shape` pairs never generated in training (tested in image generation)."""
    train_voices: int = 64
    """eSpeak voices used for training speech (the speech tokenizer's split by default)."""
    heldout_voices: int = 12
    """eSpeak voices kept for test speech only."""
    voice_seed: int = 0
    """Seed of the voice pool and its split (keep equal to the speech tokenizer's seed)."""
    assistant_voice: int = 0
    """Index (among the training voices) of the one voice the assistant speaks with in its
    spoken replies (voice-mode SFT and the test references of TTS, speech generation and
    speech-to-speech), as deployed voice assistants have one voice: from many voices a spoken
    reply's codes are mostly unpredictable from its text. -1: a random voice per reply.
    Pre-training speech pairs keep every training voice."""
    min_video_frames: int = 4
    """Fewest states in a video clip."""
    max_video_frames: int = 8
    """Most states in a video clip."""
    frame_repeat: int = 3
    """Video frames per state in the MP4 files. 1: `mio prepare`'s evenly spaced frame
    selection then takes every state once; with repeats it takes some states twice and others
    three times, an irregular pattern a model generating the video must count. More than 1
    lets scene detection see each state as a shot."""
    video_fps: float = 6.0
    """Frame rate of the MP4 files."""
    icl_shots: int = 3
    """Examples before the query in multimodal in-context learning."""
    story_steps: int = 3
    """Pictures in a story (interleaved documents and storytelling)."""
    workers: int = 2
    """Processes that synthesise speech and write video files."""

    def validate(self) -> None:
        counts = ("image_text_pairs", "language_docs", "interleaved_docs", "video_pairs",
                  "video_interleaved_docs", "speech_pairs", "sft_per_task", "eval_per_suite")
        for name in counts:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for task, n in self.sft_task_counts.items():
            if task not in SFT_TASK_NAMES:
                raise ValueError(f"sft_task_counts: unknown task {task!r} (tasks: {', '.join(SFT_TASK_NAMES)})")
            if n < 0:
                raise ValueError(f"sft_task_counts.{task} must be >= 0")
        for suite, n in self.eval_suite_counts.items():
            if suite not in EVAL_SUITE_NAMES:
                raise ValueError(f"eval_suite_counts: unknown suite {suite!r} (suites: {', '.join(EVAL_SUITE_NAMES)})")
            if n < 0:
                raise ValueError(f"eval_suite_counts.{suite} must be >= 0")
        if not 0 < self.heldout_share < 1:
            raise ValueError("heldout_share must be between 0 and 1")
        heldout_combo_set(self)  # raises on unknown colours or shapes
        if not 2 <= self.min_video_frames <= self.max_video_frames:
            raise ValueError("need 2 <= min_video_frames <= max_video_frames")
        for name in ("image_size", "train_voices", "heldout_voices", "frame_repeat", "icl_shots", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not -1 <= self.assistant_voice < self.train_voices:
            raise ValueError(f"assistant_voice must be -1 or an index below train_voices ({self.train_voices})")
        if self.icl_shots < 2:
            raise ValueError("icl_shots must be >= 2 (the shuffled control arm permutes the shots' answers)")
        if self.story_steps < 2:
            raise ValueError("story_steps must be >= 2")
        if self.video_fps <= 0:
            raise ValueError("video_fps must be positive")

    def sft_count(self, task: str) -> int:
        """Conversations to build for `task`."""
        return self.sft_task_counts.get(task, self.sft_per_task)

    def eval_count(self, suite: str) -> int:
        """Test items to build for `suite`."""
        return self.eval_suite_counts.get(suite, self.eval_per_suite)


def heldout_combo_set(cfg: WorldConfig) -> frozenset[tuple[str, str]]:
    """The held-out (colour, shape) pairs."""
    combos = set()
    for text in cfg.heldout_combos:
        parts = text.split()
        if len(parts) != 2 or parts[0] not in COLORS or parts[1] not in SHAPES:
            raise ValueError(f"heldout_combos: {text!r} is not `colour shape` (colours {list(COLORS)}, shapes {list(SHAPES)})")
        combos.add((parts[0], parts[1]))
    return frozenset(combos)


def split_voices(cfg: WorldConfig) -> tuple[list[Voice], list[Voice]]:
    """(training voices, held-out voices)."""
    return voice_pool(cfg.train_voices, cfg.heldout_voices, seed=cfg.voice_seed)


def assistant_voice(cfg: WorldConfig) -> Voice | None:
    """The voice of the assistant's spoken replies (None: a random voice per reply)."""
    return None if cfg.assistant_voice < 0 else split_voices(cfg)[0][cfg.assistant_voice]


def scene_key(scene: Scene | frozenset) -> tuple[tuple, ...]:
    """A scene's object set (`Scene.key`) in a canonical order: ((shape, colour, size, row, col), ...)."""
    return tuple(sorted(scene.key() if isinstance(scene, Scene) else scene))


def stable_fraction(seed: int, space: str, key: object) -> float:
    """A number in [0, 1) fixed by (seed, space, key): the same in every process and run."""
    digest = hashlib.sha1(f"{seed}:{space}:{key!r}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class HeldOut:
    """Which keys belong to test items: a `share` of every space by a seeded hash, plus the
    held-out voices. Test items use only held-out keys, training items none."""

    seed: int
    share: float
    voices: frozenset[str] = frozenset()
    """Ids of the held-out voices."""

    def scene(self, scene: Scene) -> bool:
        """Whether the scene's object set is reserved for test items."""
        return stable_fraction(self.seed, "scene", scene_key(scene)) < self.share

    def question(self, kind: str, key: str) -> bool:
        """Whether a question (`mio.toyworld.text` kind and key) is reserved for test items;
        never for the families that are a handful of facts (`text.HOLDABLE_KINDS`)."""
        return kind in HOLDABLE_KINDS and stable_fraction(self.seed, "question", key) < self.share

    def chart(self, bars: tuple) -> bool:
        """Whether a chart (its bars) is reserved for test items."""
        return stable_fraction(self.seed, "chart", tuple(tuple(b) for b in bars)) < self.share

    def voice(self, voice_id: str) -> bool:
        return voice_id in self.voices


def held_out(cfg: WorldConfig) -> HeldOut:
    """The world's held-out split of keys."""
    return HeldOut(cfg.seed, cfg.heldout_share, frozenset(v.id for v in split_voices(cfg)[1]))


def item_rng(seed: int, *names: object) -> random.Random:
    """The generator of one item, e.g. `item_rng(seed, "sft", "image_qa", 17)` (string
    seeds are hashed with SHA-512, so this is stable across processes and Python runs)."""
    return random.Random(":".join(str(n) for n in (seed, *names)))


def uses_combo(scene: Scene, combos: frozenset[tuple[str, str]]) -> bool:
    """Whether any object of `scene` is one of `combos`."""
    return any((o.color, o.shape) in combos for o in scene.objects)


def draw_scene(rng: random.Random, combos: frozenset[tuple[str, str]], heldout: bool | None,
               min_objects: int = 1, max_objects: int = 3) -> Scene:
    """A random scene. `heldout` False: no held-out combination (a generation target in
    training); True: at least one (a generalisation test); None: anything."""
    for _ in range(MAX_DRAWS):
        scene = SceneSampler(seed=rng.randrange(2**31), min_objects=min_objects, max_objects=max_objects).sample()
        if heldout is None or uses_combo(scene, combos) == heldout:
            return scene
    raise ValueError(f"no scene found with heldout={heldout} after {MAX_DRAWS} draws; check heldout_combos")
