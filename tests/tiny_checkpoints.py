"""Tiny checkpoints in the colbert-az layout, built by code (random weights, tokenizers trained here).

Test code, not part of the installed package: used by the tests, the package's doctests (through the root
``conftest.py``), the parity table in examples/ and the benchmarks (which put this folder on ``sys.path``); real
enough to exercise every tokenizer family.

Each family reproduces a tokenizer pipeline a real checkpoint may have; none needs the network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, ModernBertConfig, ModernBertModel, PreTrainedTokenizerFast

from colbert_az_pylate.errors import InvalidArgumentError

CORPUS = [
    "Azərbaycan mədəniyyətinin tarixi çox zəngindir və qədim dövrlərdən başlayır.",
    "Bakı Azərbaycanın paytaxtı və ən böyük şəhəridir, Xəzər dənizinin sahilində yerləşir.",
    "Qanunvericilik aktları Milli Məclis tərəfindən qəbul edilir və prezident tərəfindən imzalanır.",
    "Lövhənin mərkəzində relyefli aypara və ulduz təsvir edilmişdir.",
    "Nizami Gəncəvi Azərbaycan ədəbiyyatının ən böyük şairlərindən biridir.",
    "Şəki xan sarayı XVIII əsrdə tikilmişdir və gözəl şəbəkələri ilə məşhurdur.",
    "Ölkənin iqlimi müxtəlifdir: subtropik, mülayim və dağ iqlimi var.",
    "İçərişəhər UNESCO-nun Ümumdünya İrsi siyahısına daxil edilmişdir.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Late interaction models score every query token against every document token.",
    "Retrieval augmented generation needs a fast and accurate search engine.",
    "Neft və qaz sənayesi ölkə iqtisadiyyatının əsas sahələrindəndir, 1918-ci ildə.",
]

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
SPM_SPECIALS = ["<pad>", "</s>", "<s>", "<unk>", "<mask>"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

FAMILIES = ("gemma", "metaspace", "bytelevel", "wordpiece", "gemma_with_markers", "gemma_padded_vocab")


def _corpus(repeat: int = 8) -> list[str]:
    return CORPUS * repeat


def gemma_tokenizer() -> Tokenizer:
    """Gemma-2 style: ``Replace(" ", "▁")`` normalizer, no pre-tokenizer, byte-fallback BPE, <bos> $A <eos>."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    # Train on ▁-prefixed words (as SentencePiece does), then run without a pre-tokenizer, as Gemma does.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=360, special_tokens=GEMMA_SPECIALS))
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    return tok


def metaspace_tokenizer() -> Tokenizer:
    """SentencePiece style: Metaspace pre-tokenizer (prepend always), Unigram model, <s> $A </s>."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(
        _corpus(), trainers.UnigramTrainer(vocab_size=300, special_tokens=SPM_SPECIALS, unk_token="<unk>")
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", 2), ("</s>", 1)]
    )
    return tok


def bytelevel_tokenizer() -> Tokenizer:
    """GPT-2/RoBERTa style byte-level BPE without a prefix space, <s> $A </s>."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(
            vocab_size=500,
            special_tokens=ROBERTA_SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


def wordpiece_tokenizer() -> Tokenizer:
    """BERT style WordPiece, [CLS] $A [SEP]."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=400, special_tokens=BERT_SPECIALS))
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok


def _wrap(tok: Tokenizer, specials: list[str], bos: str, eos: str) -> PreTrainedTokenizerFast:
    def named(kind: str) -> str:
        return next(token for token in specials if kind in token.lower())

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        pad_token=named("pad"),
        unk_token=named("unk"),
        mask_token=named("mask"),
    )


def build_checkpoint(
    folder: Path, family: str = "gemma", embedding_dim: int = 24, hidden_size: int = 32, seed: int = 0
) -> Path:
    """Write a checkpoint of the colbert-az layout for a tokenizer ``family`` into ``folder``.

    Parameters
    ----------
    folder : Path
        Where to write (created if missing).
    family : str, default "gemma"
        One of :data:`FAMILIES`: the tokenizer pipeline to reproduce.
    embedding_dim : int, default 24
        Output size of ``projection.pt``.
    hidden_size : int, default 32
        Hidden size of the random backbone.
    seed : int, default 0
        Seed of the random weights.

    Returns
    -------
    Path
        ``folder``, holding ``config.json``, ``model.safetensors``, the tokenizer and ``projection.pt``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = build_checkpoint(Path(tmp) / "tiny", "wordpiece")
    ...     sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".pt", ".safetensors"))[:4]
    ['config.json', 'model.safetensors', 'projection.pt', 'tokenizer.json']
    """
    if family not in FAMILIES:
        raise InvalidArgumentError(f"unknown tokenizer family {family!r}; choose one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if family.startswith("gemma"):
        tokenizer = _wrap(gemma_tokenizer(), GEMMA_SPECIALS, "<bos>", "<eos>")
    elif family == "metaspace":
        tokenizer = _wrap(metaspace_tokenizer(), SPM_SPECIALS, "<s>", "</s>")
    elif family == "bytelevel":
        tokenizer = _wrap(bytelevel_tokenizer(), ROBERTA_SPECIALS, "<s>", "</s>")
    elif family == "wordpiece":
        tokenizer = _wrap(wordpiece_tokenizer(), BERT_SPECIALS, "[CLS]", "[SEP]")
    else:  # pragma: no cover - every family is handled above
        raise InvalidArgumentError(f"unknown tokenizer family {family!r}")
    if family == "gemma_with_markers":
        tokenizer.add_special_tokens({"additional_special_tokens": ["[Q]", "[D]"]})
    tokenizer.save_pretrained(folder)

    # Rows for [Q]/[D] exist (trained in the real model); a padded vocabulary has more rows still.
    vocab_size = len(tokenizer) + (0 if family == "gemma_with_markers" else 2)
    if family == "gemma_padded_vocab":
        vocab_size += 38
    if family == "wordpiece":
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        )
        backbone = BertModel(config)
    else:
        config = ModernBertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=1024,
            global_attn_every_n_layers=3,
            local_attention=16,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            cls_token_id=tokenizer.eos_token_id,
            sep_token_id=tokenizer.eos_token_id,
        )
        backbone = ModernBertModel(config)
    backbone.save_pretrained(folder)
    projection = torch.nn.Linear(hidden_size, embedding_dim, bias=False)
    torch.save(projection.state_dict(), folder / "projection.pt")
    return folder


def build_full_size_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A checkpoint with colbert-az's full-size architecture and random weights, for speed measurements only.

    ModernBERT (mmBERT-base-en-az's shape): hidden 768, 22 layers, 12 heads, intermediate 1152, global attention
    every 3 layers, local window 128, a 71,751-row vocabulary, plus a 768→128 projection — 165M parameters. The
    tokenizer is the small trained Gemma-like one of :func:`build_checkpoint` (its ids are a subset of the rows):
    texts tokenize into more, shorter pieces than with the real tokenizer, which only changes lengths before the
    query padding and document truncation.

    Parameters
    ----------
    folder : Path
        Where to write (created if missing).
    seed : int, default 0
        Seed of the random weights.

    Returns
    -------
    Path
        ``folder`` in the colbert-az layout.

    Examples
    --------
    >>> build_full_size_checkpoint  # doctest: +ELLIPSIS
    <function build_full_size_checkpoint at ...>
    """
    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _wrap(gemma_tokenizer(), GEMMA_SPECIALS, "<bos>", "<eos>")
    tokenizer.save_pretrained(folder)
    config = ModernBertConfig(
        vocab_size=71_751,
        hidden_size=768,
        num_hidden_layers=22,
        num_attention_heads=12,
        intermediate_size=1152,
        max_position_embeddings=8192,
        global_attn_every_n_layers=3,
        local_attention=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        cls_token_id=tokenizer.eos_token_id,
        sep_token_id=tokenizer.eos_token_id,
    )
    ModernBertModel(config).save_pretrained(folder)
    torch.save(torch.nn.Linear(768, 128, bias=False).state_dict(), folder / "projection.pt")
    return folder
