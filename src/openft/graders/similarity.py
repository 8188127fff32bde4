"""`text_similarity` metrics, each computed by the library that defines it:

- fuzzy_match: rapidfuzz's `fuzz.WRatio(input, reference, processor=utils.default_process)
  / 100`, as OpenAI's graders guide computes it;
- bleu, gleu, meteor: nltk (`sentence_bleu` with smoothing method 1, `sentence_gleu`,
  `meteor_score`) on nltk's `wordpunct_tokenize` tokens, the reference as the one
  reference;
- rouge_1 … rouge_5, rouge_l: Google's rouge-score, the F-measure.

meteor needs WordNet. Nothing is downloaded at run time: the WordNet 3.0 files of
Debian's `wordnet-base` (/usr/share/wordnet, or OPENFT_WORDNET_DIR) are copied once per
process into a private directory beside the two files nltk's reader also wants (the
lexicographer file list, read from the package's own lexnames(5) page, and an empty
sense index, which meteor does not use). Without them, `meteor` is refused at validation.

The libraries are imported on first use: the API imports this module only for a grader
that needs it."""

from __future__ import annotations

import atexit
import gzip
import os
import re
import shutil
import tempfile
import threading
import warnings
from functools import cache
from pathlib import Path
from typing import Any

WORDNET_DIR = Path("/usr/share/wordnet")
LEXNAMES_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
_CATEGORIES = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_wordnet_lock = threading.Lock()


def similarity(metric: str, text: str, reference: str) -> float:
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz, utils

        return float(fuzz.WRatio(text, reference, processor=utils.default_process)) / 100.0
    if metric.startswith("rouge_"):
        return _rouge(metric, text, reference)
    hypothesis, references = _tokens(text), [_tokens(reference)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns about short sentences; the score stands
        if metric == "bleu":
            from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

            if not hypothesis or not references[0]:
                return 0.0
            score = sentence_bleu(
                references, hypothesis, smoothing_function=SmoothingFunction().method1
            )
            return float(score)
        if metric == "gleu":
            from nltk.translate.gleu_score import sentence_gleu

            return float(sentence_gleu(references, hypothesis))
        if metric == "meteor":
            from nltk.translate.meteor_score import meteor_score

            return float(meteor_score(references, hypothesis, wordnet=wordnet()))
    raise ValueError(f"unknown text_similarity metric {metric!r}")


def _tokens(text: str) -> list[str]:
    from nltk.tokenize import wordpunct_tokenize

    return list(wordpunct_tokenize(text))


def _rouge(metric: str, text: str, reference: str) -> float:
    key = "rougeL" if metric == "rouge_l" else f"rouge{metric.removeprefix('rouge_')}"
    scores = _rouge_scorer(key).score(reference, text)  # (target, prediction)
    return float(scores[key].fmeasure)


@cache
def _rouge_scorer(key: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([key])


def _wordnet_source() -> Path:
    return Path(os.environ.get("OPENFT_WORDNET_DIR") or WORDNET_DIR)


def meteor_unavailable() -> str | None:
    """Why meteor cannot be computed here, or None when it can."""
    source = _wordnet_source()
    if not (source / "data.noun").is_file():
        return (
            f"WordNet 3.0 is not installed ({source} has no data files): install Debian's "
            "'wordnet-base' package, or set OPENFT_WORDNET_DIR."
        )
    if _lexnames(source) is None:
        return f"WordNet's lexicographer file list ({LEXNAMES_PAGE}) is missing."
    try:
        import nltk  # noqa: F401
    except ImportError:
        return "the nltk library is not installed."
    return None


def _lexnames(source: Path) -> str | None:
    if (source / "lexnames").is_file():
        return (source / "lexnames").read_text()
    if not LEXNAMES_PAGE.is_file():
        return None
    lines = []
    with gzip.open(LEXNAMES_PAGE, "rt", encoding="utf-8", errors="replace") as page:
        for line in page:
            match = re.match(r"^(\d\d)\s+((noun|verb|adj|adv)\.\w+)\s", line)
            if match:
                lines.append(f"{match[1]}\t{match[2]}\t{_CATEGORIES[match[3]]}\n")
    return "".join(lines) or None


@cache
def wordnet() -> Any:
    """nltk's WordNet reader over a private copy of the packaged files (nltk reads
    corpora only from its own data path, and refuses linked files)."""
    with _wordnet_lock:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader

        class PackagedWordNet(WordNetCorpusReader):  # type: ignore[misc]
            def map_wn(self, version: str = "wordnet") -> None:
                # Mapping to another WordNet version serves the multilingual data only,
                # which is not installed; nltk would look for it on its download path.
                return None

        source = _wordnet_source()
        lexnames = _lexnames(source)
        if lexnames is None:
            raise RuntimeError(meteor_unavailable() or "WordNet is not available")
        root = Path(tempfile.mkdtemp(prefix="openft-wordnet-"))
        atexit.register(shutil.rmtree, root, True)
        for path in source.iterdir():
            if path.is_file():
                shutil.copyfile(path, root / path.name)
        (root / "lexnames").write_text(lexnames)
        if not (root / "index.sense").exists():
            (root / "index.sense").write_text("")
        nltk.data.path.append(str(root))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available"
            return PackagedWordNet(str(root), None)
