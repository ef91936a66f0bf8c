"""The released MIO-7B layout on a GPU: a tiny random-weight replica (tests/released_replica.py)
loads with device="cuda", reads an image and speech, draws an image and speaks; prints JSON.

    python scripts/gpu_released_replica.py OUT_DIR [DEVICE]     # DEVICE: cuda (default), cpu, ...
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mio.api import MIO  # noqa: E402
from mio.segments import Image, Speech  # noqa: E402
from released_replica import write_released_replica  # noqa: E402


def main() -> None:
    out, device = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "cuda"
    start = time.perf_counter()
    mio = MIO.from_pretrained(write_released_replica(out / "replica"), device=device)
    picture = PILImage.fromarray(np.full((40, 40, 3), (200, 30, 30), np.uint8))
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(4800) / 16000)).astype(np.float32)
    drawn = mio.chat([{"role": "user", "content": [picture, "Draw it again."]}], output_modalities={"image"},
                     seed=0, max_new_tokens=80)
    spoken = mio.chat([{"role": "user", "content": [Speech(wave=tone, sample_rate=16000), "Answer."]}], mode="voice",
                      seed=0, max_new_tokens=80)
    result = {
        "device": str(mio.device), "image_tokenizer_device": str(mio.image_tokenizer.device),
        "images_drawn": sum(isinstance(s, Image) and s.image is not None for s in drawn),
        "speech_waves": sum(isinstance(s, Speech) and s.wave is not None for s in spoken),
        "seconds": round(time.perf_counter() - start, 1),
        "device_name": torch.cuda.get_device_name() if mio.device.type == "cuda" else mio.device.type,
    }
    print(json.dumps(result))
    if not (result["images_drawn"] and result["speech_waves"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
