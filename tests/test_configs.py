"""Every shipped config parses into its typed dataclass; the paper presets mirror Table 9."""

from pathlib import Path

import pytest

from mio import config as config_lib
from mio.data.mixture import PAPER_STAGE_RATIOS
from mio.train.loop import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_class(path: Path):
    kind = path.parent.name
    if kind == "tokenizer":
        if path.name.startswith("image"):
            from mio.train.image_tokenizer import ImageTrainConfig

            return ImageTrainConfig
        from mio.train.speech_tokenizer import SpeechTrainConfig

        return SpeechTrainConfig
    if kind == "toyworld":
        from mio.toyworld.world import WorldConfig

        return WorldConfig
    if kind == "demo":
        from mio.demo.pipeline import DemoConfig

        return DemoConfig
    return TrainConfig


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.toml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_parses_and_saves_back(path, tmp_path):
    cls = config_class(path)
    cfg = config_lib.load(cls, path)
    assert config_lib.load(cls, config_lib.save(cfg, tmp_path / "saved.toml")) == cfg


def test_shipped_configs_are_package_data():
    """`mio demo` from an installed wheel finds its presets inside the package."""
    import mio

    assert CONFIGS.resolve() == (Path(mio.__file__).parent / "configs").resolve()
    pyproject = (CONFIGS.parent / "pyproject.toml").read_text()
    assert 'mio = ["configs/**/*.toml"]' in pyproject


@pytest.mark.parametrize("stage, table9", [("stage1", "I"), ("stage2", "II"), ("stage3", "III")])
def test_paper_presets_follow_table_9_and_appendix_b(stage, table9):
    cfg = config_lib.load(TrainConfig, CONFIGS / "paper" / f"{stage}.toml")
    ratios = {g: w for g, w in cfg.data.ratios.items() if w}
    assert ratios == {g: w for g, w in PAPER_STAGE_RATIOS[table9].items() if w}
    assert cfg.context_length == 2800
    assert (cfg.optim.lr, cfg.optim.warmup_ratio, cfg.optim.grad_clip) == (3e-5, 0.03, 1.0)
    assert cfg.layout.num_added == 12292
