"""`mio_document` attention: per-document SDPA on packed rows, checked against the explicit
mask, against each document run alone, and against plain `sdpa` where there is no layout."""

import json
import random
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from mio.data.encode import Encoded
from mio.data.packing import collate_rows
from mio.model import BUCKET_MIN_WIDTH, BUCKET_RATIO, DOCUMENT_ATTENTION, DocumentLayout, ModelConfig, build_model, token_losses

# Grouped-query attention (4 heads over 2 key/value heads), as in Yi.
SHAPE = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
VOCAB = 100
ROW = 256


def doc(n: int, seed: int) -> Encoded:
    g = random.Random(seed)
    return Encoded([g.randrange(VOCAB) for _ in range(n)], [g.random() > 0.2 for _ in range(n)], "language")


def models():
    """The same weights twice: `mio_document`, and `sdpa` with the explicit document mask."""
    fast = build_model(ModelConfig(**SHAPE), VOCAB)
    reference = build_model(ModelConfig(**SHAPE, attn_implementation="sdpa"), VOCAB)
    assert fast.config._attn_implementation == DOCUMENT_ATTENTION
    assert all(torch.equal(a, b) for a, b in zip(fast.parameters(), reference.parameters()))
    return fast, reference


# Lengths spread over several buckets: long documents, short ones sharing the smallest bucket,
# a row with padding, a document filling a whole row, and a row that is mostly padding.
ROWS = [[doc(n, 10 * r + i) for i, n in enumerate(lengths)]
        for r, lengths in enumerate([[150, 70, 36], [100, 90, 40, 20, 3], [ROW], [5]])]


def test_packed_losses_and_gradients_match_the_explicit_mask_and_each_document_alone(one_thread):
    fast, reference = models()
    batch = collate_rows(ROWS, ROW, pad_id=0)
    assert batch.num_pad > 0
    losses = token_losses(fast, batch)
    expected = token_losses(reference, batch)
    torch.testing.assert_close(losses, expected, atol=1e-5, rtol=1e-5)
    losses.sum().backward()
    expected.sum().backward()
    for (name, a), b in zip(fast.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():
        for r, row in enumerate(ROWS):
            start = 0
            for d in row:
                alone = token_losses(fast, collate_rows([[d]], len(d), pad_id=0))[0]
                torch.testing.assert_close(losses[r, start:start + len(d)].detach(), alone, atol=1e-5, rtol=1e-5)
                start += len(d)


def test_padding_gives_finite_outputs(one_thread):
    fast, _ = models()
    batch = collate_rows([[doc(3, 0)], []], 80, pad_id=0)  # a row of 77 padding tokens, and one of padding only
    with torch.no_grad():
        logits = fast(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                      attention_mask=torch.ones_like(batch.input_ids, dtype=torch.bool),
                      document_layout=DocumentLayout.from_document_ids(batch.document_ids)).logits
    assert logits.isfinite().all()


def test_layout_covers_every_token_once_in_its_own_document():
    batch = collate_rows(ROWS, ROW, pad_id=0)
    layout = DocumentLayout.from_document_ids(batch.document_ids)
    grid = torch.cat([c.flatten() for c in layout.cells])
    tokens = torch.arange(batch.num_tokens)
    assert torch.equal(grid[layout.slots], tokens)  # each token's output slot holds that token
    assert sorted(layout.slots.tolist()) == sorted(set(layout.slots.tolist()))
    assert len(layout.cells) > 2  # the batch spans several buckets
    ids = batch.document_ids.flatten()
    for cells in layout.cells:
        rows, positions = cells // ROW, cells % ROW
        width = rows.shape[1]
        # every cell of a grid row lies in one segment of one batch row
        assert (rows == rows[:, :1]).all() and (ids[rows * ROW + positions] == ids[rows[:, :1] * ROW + positions[:, :1]]).all()
        sizes = [len(torch.unique(p)) for p in positions]  # fill cells repeat the segment's first position
        assert max(sizes) == width
        assert min(sizes) * BUCKET_RATIO >= width or width <= BUCKET_MIN_WIDTH


def test_without_a_layout_it_is_sdpa_with_padding_masks_and_a_kv_cache(one_thread):
    fast, reference = models()
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding, as the generation engine lays out prompts
    with torch.no_grad():
        outs = [m(input_ids=ids, attention_mask=mask, use_cache=True) for m in (fast, reference)]
        torch.testing.assert_close(outs[0].logits[mask.bool()], outs[1].logits[mask.bool()])
        step = torch.randint(0, VOCAB, (2, 1), generator=torch.Generator().manual_seed(1))
        mask = torch.cat([mask, torch.ones_like(step)], dim=1)
        nexts = [m(input_ids=step, attention_mask=mask, cache=o.cache).logits for m, o in zip((fast, reference), outs)]
    torch.testing.assert_close(nexts[0], nexts[1])


def test_checkpoint_config_does_not_name_it_and_loads_either_way(tmp_path):
    fast, _ = models()
    fast.save_pretrained(tmp_path)
    assert DOCUMENT_ATTENTION not in (tmp_path / "config.json").read_text()
    again = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=DOCUMENT_ATTENTION)
    assert again.config._attn_implementation == DOCUMENT_ATTENTION
    # Plain transformers, without MIO imported, loads it with its default attention.
    code = ("import json, sys; from transformers import AutoModelForCausalLM; "
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); print(json.dumps(m.config._attn_implementation))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == "sdpa"


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_the_explicit_mask_implementations_stay_available(implementation, one_thread):
    model = build_model(ModelConfig(**SHAPE, attn_implementation=implementation), VOCAB)
    batch = collate_rows(ROWS[:2], ROW, pad_id=0)
    fast, _ = models()
    with torch.no_grad():
        torch.testing.assert_close(token_losses(model, batch), token_losses(fast, batch), atol=1e-5, rtol=1e-5)
