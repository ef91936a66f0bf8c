"""Training and evaluation of the embedded speech tokenizer (`mio tokenizer train speech CONFIG`).

Data: short procedural sentences spoken by eSpeak NG voices (`mio.toyworld.speech_synth`),
synthesized once at the start. The codec is trained on the training voices; metrics are
measured on held-out sentences spoken by held-out voices:

- reconstruction: log-mel L1 between the original and the decoded audio;
- content: character error rate of the layer-1 CTC head (does layer 1 know the words?);
- disentanglement: speaker-identification accuracy of a logistic-regression probe on the
  mean layer-1 embedding vs the mean embedding of layers 2-4 (layer 1 should know little of
  the voice);
- codebook usage per layer, encode / decode real-time factors on this machine;
- intelligibility: Whisper WER on decoded audio beside its WER on the original audio, when
  the optional judge (`mio.judges.speech`) is installed.

The output directory holds the tokenizer (config.json + model.safetensors) and metrics.json.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from mio import config as config_lib
from mio.media.audio import normalize_loudness
from mio.tokenizers.speech import CTC_ALPHABET, EmbeddedSpeechTokenizer, SpeechCodec, SpeechTokenizerConfig
from mio.toyworld import speech_synth
from mio.train.schedule import cosine_factor

log = logging.getLogger(__name__)

PROBE_LR = 1e-2
PROBE_WEIGHT_DECAY = 1e-3
STD_FLOOR = 1e-6
NORMALIZATION_UTTERANCES = 256
"""Training utterances the per-bin feature statistics are measured on (random voices and texts)."""


@dataclass
class SpeechTrainConfig:
    """How to train and evaluate the embedded speech tokenizer."""

    model: SpeechTokenizerConfig = field(default_factory=SpeechTokenizerConfig)
    """The codec architecture (saved with the tokenizer)."""
    out_dir: str = "runs/tokenizer/speech"
    """Where the tokenizer and metrics.json are written (`--out` overrides)."""
    seed: int = 0
    """Seed of the sentences, voices, batches and initialisation."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 16
    """Utterances per step."""
    learning_rate: float = 2e-3
    """Peak AdamW learning rate (linear warmup, cosine decay)."""
    warmup_steps: int = 50
    """Linear warmup steps."""
    bucket_batches: int = 32
    """Batches drawn from each length-sorted pool of shuffled utterances (1: random batches);
    utterances of similar length batched together waste less compute on padding."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    mel_weight: float = 1.0
    """Weight of the log-mel L1 loss beside the log-magnitude L1 loss."""
    ctc_weight: float = 0.5
    """Weight of the layer-1 CTC content loss."""
    speaker_adversary_weight: float = 0.0
    """Weight of a per-frame speaker classifier on layer 1 behind gradient reversal, which
    pushes the voice out of layer 1 (0: off). Not in the paper: SpeechTokenizer gets its
    content layer from HuBERT distillation, which CTC alone does not fully replace."""
    timbre_shuffle: float = 0.0
    """Share of training utterances whose timbre layers (2-4) the decoder gets shuffled in
    time, each layer apart, while it must still draw the true audio: the decoder learns to
    say what layer 1 says when the timbre codes do not follow it, as those a language model
    writes mostly do not (their held-out loss is near uniform). 0: off."""
    train_utterances: int = 2000
    """Training utterances synthesized at the start."""
    train_voices: int = 64
    """Voices the training utterances are spoken by."""
    heldout_voices: int = 12
    """Voices never trained on, for the metrics."""
    heldout_utterances_per_voice: int = 8
    """Held-out sentences per held-out voice (half train the speaker probe, half test it)."""
    judge_utterances: int = 48
    """Held-out utterances transcribed by the Whisper judge (0: skip the judge)."""
    log_every: int = 50
    """Steps between progress lines."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""

    def validate(self) -> None:
        """Raise ValueError on inconsistent values."""
        if not 0 <= self.timbre_shuffle <= 1:
            raise ValueError(f"timbre_shuffle must be in [0, 1], got {self.timbre_shuffle}")
        if self.steps < 1 or self.batch_size < 1 or self.bucket_batches < 1 or self.train_utterances < self.batch_size:
            raise ValueError(
                "steps >= 1, batch_size >= 1, bucket_batches >= 1 and train_utterances >= batch_size are required"
            )
        if self.heldout_voices < 2 or self.heldout_utterances_per_voice < 2:
            raise ValueError("the speaker probe needs heldout_voices >= 2 and heldout_utterances_per_voice >= 2")


@dataclass
class Utterances:
    """Waveforms with their transcripts and speaker labels."""

    waves: list[torch.Tensor]
    texts: list[str]
    speakers: list[str]

    @property
    def samples(self) -> int:
        return sum(len(w) for w in self.waves)


def make_utterances(texts: list[str], voices: list[speech_synth.Voice], sample_rate: int, seed: int) -> Utterances:
    """Speak `texts[i]` with `voices[i]` (the codec's data source), loudness-normalised."""
    waves = speech_synth.synthesize_many(texts, voices, sample_rate, seed=seed)
    return Utterances([normalize_loudness(torch.from_numpy(w)) for w in waves], list(texts), [v.id for v in voices])


def text_to_labels(text: str) -> list[int]:
    """CTC targets: characters of CTC_ALPHABET (lower-cased; others dropped), offset by the blank."""
    return [CTC_ALPHABET.index(ch) + 1 for ch in text.lower() if ch in CTC_ALPHABET]


def ctc_greedy(log_probs: torch.Tensor, length: int) -> str:
    """Best-path CTC decoding of one [T, classes] sequence."""
    best = log_probs[:length].argmax(-1).tolist()
    out, previous = [], 0
    for c in best:
        if c != previous and c != 0:
            out.append(CTC_ALPHABET[c - 1])
        previous = c
    return "".join(out)


def length_bucketed_batches(
    lengths: list[int], batch_size: int, bucket_batches: int, rng: random.Random
) -> list[list[int]]:
    """One epoch of full batches in random order, each drawn from a length-sorted pool of
    `bucket_batches` batches' worth of shuffled utterances, so that little of a batch is padding."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * bucket_batches
    batches = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool], key=lengths.__getitem__)
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def _batch(codec: SpeechCodec, utts: Utterances, idx: list[int]):
    """Padded waves -> features, masks and CTC targets for one batch."""
    waves = [utts.waves[i] for i in idx]
    n = torch.tensor([len(w) for w in waves])
    padded = torch.zeros(len(waves), int(n.max()))
    for row, w in enumerate(waves):
        padded[row, : len(w)] = w
    log_mag, log_mel = codec.features(padded)
    spectral_len = n // codec.config.hop_length + 1
    code_len = torch.tensor([codec.code_frames(int(s)) for s in spectral_len])
    spectral_mask = torch.arange(log_mag.shape[-1])[None] < spectral_len[:, None]
    code_mask = torch.arange(codec.code_frames(log_mag.shape[-1]))[None] < code_len[:, None]
    labels = [text_to_labels(utts.texts[i]) for i in idx]
    return log_mag, log_mel, spectral_mask, code_mask, code_len, labels


def _masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[:, None, :].float().expand_as(pred)
    return ((pred - target).abs() * weights).sum() / weights.sum()


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class SpeakerAdversary(torch.nn.Module):
    """Classifies the speaker of every layer-1 frame; trained through gradient reversal, its
    loss makes the encoder remove the voice from layer 1. Used in training only."""

    def __init__(self, dim: int, n_speakers: int, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, n_speakers))

    def forward(self, content: torch.Tensor, speakers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over valid frames of content [B, T, D] against speakers [B]."""
        logits = self.net(_ReverseGradient.apply(content))
        targets = speakers[:, None].expand(mask.shape)
        return F.cross_entropy(logits[mask], targets[mask])


@torch.no_grad()
def shuffled_timbre_offset(codec: SpeechCodec, codes: torch.Tensor, mask: torch.Tensor, share: float) -> torch.Tensor:
    """What to add to the quantized latent [B, T, D] of `codes` [B, T, layers] so that, for a
    random `share` of the utterances, each timbre layer's code vectors come in a random order
    over the utterance's valid frames (`mask` [B, T]); zero for the others."""
    layers = codec.rvq.get_codes_from_indices(codes.clamp_min(0))  # [layers, B, T, D]
    offset = torch.zeros_like(layers[0])
    for b in torch.nonzero(torch.rand(codes.shape[0]) < share).flatten().tolist():
        valid = int(mask[b].sum())
        for timbre in layers[1:]:
            offset[b, :valid] += timbre[b, torch.randperm(valid)] - timbre[b, :valid]
    return offset


def training_losses(
    codec: SpeechCodec,
    utts: Utterances,
    idx: list[int],
    cfg: SpeechTrainConfig,
    adversary: SpeakerAdversary | None = None,
    speaker_ids: dict[str, int] | None = None,
) -> dict:
    """All losses of one batch; "total" is what is optimised."""
    log_mag, log_mel, spectral_mask, code_mask, code_len, labels = _batch(codec, utts, idx)
    latent = codec.encode_latent(log_mel)
    quantized, codes, commit = codec.quantize(latent, mask=code_mask)
    if cfg.timbre_shuffle > 0:
        quantized = quantized + shuffled_timbre_offset(codec, codes, code_mask, cfg.timbre_shuffle)
    pred = codec.decode_log_magnitude(quantized)[..., : log_mag.shape[-1]]
    mag_loss = _masked_l1(pred, log_mag, spectral_mask)
    mel_loss = _masked_l1(codec.spec.log_mel(pred.exp()), log_mel, spectral_mask)
    content = codec.content(latent, codes)
    ctc_log_probs = codec.ctc_logits(content)
    ctc_loss = F.ctc_loss(
        ctc_log_probs.transpose(0, 1),
        torch.tensor([c for lab in labels for c in lab]),
        code_len * codec.config.ctc_upsample,
        torch.tensor([len(lab) for lab in labels]),
        zero_infinity=True,  # an utterance spoken faster than the head can spell is skipped, not fatal
    )
    total = mag_loss + cfg.mel_weight * mel_loss + cfg.ctc_weight * ctc_loss + commit
    losses = {"total": total, "magnitude": mag_loss, "mel": mel_loss, "ctc": ctc_loss, "commit": commit}
    if adversary is not None:
        speakers = torch.tensor([speaker_ids[utts.speakers[i]] for i in idx])
        losses["speaker_adversary"] = adversary(content, speakers, code_mask)
        losses["total"] = total + cfg.speaker_adversary_weight * losses["speaker_adversary"]
    return losses


def train(cfg: SpeechTrainConfig, out_dir: str | Path | None = None) -> tuple[EmbeddedSpeechTokenizer, dict]:
    """Synthesize data, train the codec (saved to `out_dir` if given, before the slower
    evaluation), and measure it; returns (tokenizer, metrics)."""
    previous_threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, out_dir)
    finally:
        torch.set_num_threads(previous_threads)


def _train(cfg: SpeechTrainConfig, out_dir: str | Path | None) -> tuple[EmbeddedSpeechTokenizer, dict]:
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    sr = cfg.model.sample_rate
    train_voices, heldout_voices = speech_synth.voice_pool(cfg.train_voices, cfg.heldout_voices, seed=cfg.seed)

    start = time.perf_counter()
    texts = speech_synth.sample_sentences(cfg.train_utterances, seed=cfg.seed)
    train_utts = make_utterances(texts, [rng.choice(train_voices) for _ in texts], sr, seed=cfg.seed)
    n_held = cfg.heldout_utterances_per_voice
    held_texts = speech_synth.sample_sentences(cfg.heldout_voices * n_held, seed=cfg.seed + 1)
    held_utts = make_utterances(held_texts, [v for v in heldout_voices for _ in range(n_held)], sr, seed=cfg.seed + 1)
    synth_seconds = time.perf_counter() - start
    log.info(
        "synthesized %d training utterances (%.0f s of audio, %d voices) and %d held-out in %.1f s",
        len(texts), train_utts.samples / sr, len(train_voices), len(held_texts), synth_seconds,
    )  # fmt: skip

    codec = SpeechCodec(cfg.model)
    stats_idx = list(range(min(len(train_utts.waves), NORMALIZATION_UTTERANCES)))
    log_mag, log_mel, spectral_mask, *_ = _batch(codec, train_utts, stats_idx)
    codec.fit_normalization(log_mag, log_mel, spectral_mask)
    n_params = sum(p.numel() for p in codec.parameters())
    log.info("codec: %.2fM parameters, %g codes/s x %d layers", n_params / 1e6, cfg.model.frame_rate, cfg.model.num_layers)
    params = list(codec.parameters())
    adversary, speaker_ids = None, None
    if cfg.speaker_adversary_weight > 0:
        speaker_ids = {v.id: i for i, v in enumerate(train_voices)}
        adversary = SpeakerAdversary(cfg.model.latent_dim, len(train_voices))
        params += list(adversary.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    codec.train()
    lengths = [len(w) for w in train_utts.waves]
    batches: list[list[int]] = []
    start = time.perf_counter()
    running: dict[str, float] = {}
    for step in range(cfg.steps):
        if not batches:
            batches = length_bucketed_batches(lengths, cfg.batch_size, cfg.bucket_batches, rng)
        idx = batches.pop()
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate * cosine_factor(step, cfg.warmup_steps, cfg.steps)
        losses = training_losses(codec, train_utts, idx, cfg, adversary, speaker_ids)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + v.item()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - start
            n = (step % cfg.log_every) + 1
            eta = elapsed / (step + 1) * (cfg.steps - step - 1)
            parts = " ".join(f"{k} {v / n:.3f}" for k, v in running.items())
            log.info("step %d/%d %s | %.2f s/step, ETA %.0f s", step + 1, cfg.steps, parts, elapsed / (step + 1), eta)
            final_losses = {k: v / n for k, v in running.items()}
            running = {}
    train_seconds = time.perf_counter() - start

    tokenizer = EmbeddedSpeechTokenizer(cfg.model, codec)
    if out_dir is not None:
        tokenizer.save(out_dir)
        log.info("trained in %.0f s; saved the speech tokenizer to %s; evaluating", train_seconds, out_dir)
    metrics = {
        "train": {
            "steps": cfg.steps,
            "seconds": train_seconds,
            "synthesis_seconds": synth_seconds,
            "parameters": n_params,
            "final_losses": final_losses,
            "train_utterances": len(texts),
            "train_voices": len(train_voices),
        },
        "heldout": evaluate(tokenizer, held_utts, n_held),
        "tokens_per_second": cfg.model.frame_rate * cfg.model.num_layers,
    }
    metrics["judge"] = judge(tokenizer, held_utts, cfg.judge_utterances)
    return tokenizer, metrics


@torch.no_grad()
def evaluate(tokenizer: EmbeddedSpeechTokenizer, utts: Utterances, per_speaker: int) -> dict:
    """Reconstruction, content, disentanglement, codebook usage and speed on held-out audio."""
    from mio.judges.speech import cer

    codec, sr = tokenizer.codec.eval(), tokenizer.sample_rate
    codes, decoded = [], []
    start = time.perf_counter()
    for w in utts.waves:
        codes.append(tokenizer.encode(w, sr))
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for c in codes:
        decoded.append(tokenizer.decode(c)[0])
    decode_seconds = time.perf_counter() - start
    audio_seconds = utts.samples / sr

    mel_l1 = []
    for original, rebuilt in zip(utts.waves, decoded):
        n = min(len(original), len(rebuilt))
        mel_l1.append(float((codec.features(original[None, :n])[1] - codec.features(rebuilt[None, :n])[1]).abs().mean()))

    layer_embeddings = [codec.rvq.get_codes_from_indices(c.T[None])[:, 0] for c in codes]  # [layers, T, D] each
    hyps = []
    for emb in layer_embeddings:
        log_probs = codec.ctc_logits(emb[0][None])[0]
        hyps.append(ctc_greedy(log_probs, log_probs.shape[0]))
    refs = ["".join(ch for ch in t.lower() if ch in CTC_ALPHABET) for t in utts.texts]

    content_features = torch.stack([e[0].mean(0) for e in layer_embeddings])
    timbre_features = torch.stack([e[1:].sum(0).mean(0) for e in layer_embeddings])
    speakers = sorted(set(utts.speakers))
    labels = torch.tensor([speakers.index(s) for s in utts.speakers])
    is_train = torch.tensor([i % per_speaker < per_speaker // 2 for i in range(len(labels))])

    all_codes = torch.cat(codes, dim=1)  # [layers, total frames]
    usage = {}
    for layer in range(tokenizer.num_layers):
        counts = torch.bincount(all_codes[layer], minlength=tokenizer.codebook_size).float()
        p = counts[counts > 0] / counts.sum()
        usage[f"layer{layer + 1}"] = {
            "used_fraction": float((counts > 0).float().mean()),
            "perplexity": float(torch.exp(-(p * p.log()).sum())),
        }
    return {
        "utterances": len(utts.waves),
        "speakers": len(speakers),
        "audio_seconds": audio_seconds,
        "mel_l1": float(np.mean(mel_l1)),
        "layer1_ctc_cer": cer(refs, hyps),
        "probe_speaker_accuracy": {
            "layer1": probe_accuracy(content_features, labels, is_train),
            "layers2_4": probe_accuracy(timbre_features, labels, is_train),
            "chance": 1.0 / len(speakers),
        },
        "codebook_usage": usage,
        "encode_rtf": encode_seconds / audio_seconds,
        "decode_rtf": decode_seconds / audio_seconds,
        "ctc_examples": [{"ref": r, "layer1": h} for r, h in list(zip(refs, hyps))[:3]],
    }


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, is_train: torch.Tensor, steps: int = 300) -> float:
    """Test accuracy of a multinomial logistic regression trained on the `is_train` rows."""
    mean, std = features[is_train].mean(0), features[is_train].std(0).clamp_min(STD_FLOOR)
    x = (features - mean) / std
    n_classes = int(labels.max()) + 1
    with torch.enable_grad():
        linear = torch.nn.Linear(x.shape[1], n_classes)
        optimizer = torch.optim.Adam(linear.parameters(), lr=PROBE_LR, weight_decay=PROBE_WEIGHT_DECAY)
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(linear(x[is_train]), labels[is_train]).backward()
            optimizer.step()
    predictions = linear(x[~is_train]).argmax(-1)
    return float((predictions == labels[~is_train]).float().mean())


def judge(tokenizer: EmbeddedSpeechTokenizer, utts: Utterances, n: int) -> dict:
    """Whisper WER on original vs decoded held-out audio, or why it was skipped."""
    from mio.judges import speech as speech_judge

    if n <= 0:
        return {"skipped": "judge_utterances = 0"}
    if not speech_judge.available():
        log.warning("speech judge skipped: %s", speech_judge.UNAVAILABLE_HINT)
        return {"skipped": speech_judge.UNAVAILABLE_HINT}
    sr = tokenizer.sample_rate
    originals = utts.waves[:n]
    rebuilt = [tokenizer.decode(tokenizer.encode(w, sr))[0] for w in originals]
    refs = utts.texts[:n]
    start = time.perf_counter()
    hyp_original = speech_judge.transcribe(originals, sr)
    hyp_rebuilt = speech_judge.transcribe(rebuilt, sr)
    log.info("judge transcribed %d utterances twice in %.1f s", len(refs), time.perf_counter() - start)
    return {
        "utterances": len(refs),
        "wer_original": speech_judge.wer(refs, hyp_original),
        "wer_reconstructed": speech_judge.wer(refs, hyp_rebuilt),
        "examples": [
            {"ref": r, "original": a, "reconstructed": b} for r, a, b in list(zip(refs, hyp_original, hyp_rebuilt))[:3]
        ],
    }


def train_from_config(config_path: str | Path, out_dir: str | Path | None = None) -> dict:
    """Train from a TOML config, save the tokenizer and metrics.json to the output directory."""
    cfg = config_lib.load(SpeechTrainConfig, config_path)
    out = Path(out_dir or cfg.out_dir)
    _, metrics = train(cfg, out)
    metrics["config"] = config_lib.to_dict(cfg)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    held = metrics["heldout"]
    log.info(
        "speech tokenizer in %s: mel L1 %.3f, layer-1 CER %.3f, speaker probe layer1 %.2f vs layers2-4 %.2f "
        "(chance %.2f), encode RTF %.4f, decode RTF %.4f",
        out, held["mel_l1"], held["layer1_ctc_cer"], held["probe_speaker_accuracy"]["layer1"],
        held["probe_speaker_accuracy"]["layers2_4"], held["probe_speaker_accuracy"]["chance"],
        held["encode_rtf"], held["decode_rtf"],
    )  # fmt: skip
    if "wer_original" in metrics["judge"]:
        log.info("Whisper WER: original %.3f, reconstructed %.3f",
                 metrics["judge"]["wer_original"], metrics["judge"]["wer_reconstructed"])
    return metrics
