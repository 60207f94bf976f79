"""Phrase matching that tolerates ASR errors: normalised word windows compared with rapidfuzz.

Text and phrases are reduced to lower-case words (punctuation dropped,
contractions expanded, filler words such as "um" removed, redaction tokens
such as `[CARD_NUMBER]` kept whole). A phrase of k words is compared with every
window of k-1 to k+1 words of the text, so a word split or merged by the
recogniser ("record it" for "recorded") still matches; windows never cut a
word, so "sue" does not match inside "issue". Besides the whole-window
similarity, the words must align one by one (a phrase word may match two
window words run together, or two phrase words one window word), and short
words must match exactly: "not", "sue" or "in" carry the meaning, so "not
helpful" never matches "most helpful" and "can afford" never matches "can not
afford". Each normalised word remembers its character span in the original
text, so evidence points at what was said.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import fuzz, process

_APOSTROPHE = "\u2019"  # typographic apostrophe, as some ASR engines write it
_TOKEN = re.compile(r"\[[A-Z][A-Z0-9_]*\]|[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)*")

_CONTRACTIONS: dict[str, tuple[str, ...]] = {
    "can't": ("can", "not"),
    "cannot": ("can", "not"),
    "won't": ("will", "not"),
    "shan't": ("shall", "not"),
    "ain't": ("is", "not"),
    "i'm": ("i", "am"),
    "let's": ("let", "us"),
    # ASR engines often drop the apostrophe
    "cant": ("can", "not"),
    "wont": ("will", "not"),
    "dont": ("do", "not"),
    "didnt": ("did", "not"),
    "doesnt": ("does", "not"),
    "isnt": ("is", "not"),
    "wasnt": ("was", "not"),
    "arent": ("are", "not"),
    "couldnt": ("could", "not"),
    "wouldnt": ("would", "not"),
    "shouldnt": ("should", "not"),
    "havent": ("have", "not"),
    "im": ("i", "am"),
    "ive": ("i", "have"),
    "youre": ("you", "are"),
}
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "n't": ("not",),
    "'re": ("are",),
    "'ve": ("have",),
    "'ll": ("will",),
    "'d": ("would",),
}
NEGATIONS = frozenset({"not", "no", "never", "nothing", "nobody", "none"})
"""Words that a split or merge may never swallow: they flip the meaning."""
MERGE_THRESHOLD = 85.0
"""Two phrase words heard as one ("any more" as "anymore") must be this close: a merge
that simply drops a word ("my husband died" as "my husband") must not pass."""
FILLERS = frozenset({"um", "uh", "uhm", "erm", "er", "ah", "eh", "hmm", "mm", "mhm"})


@dataclass(frozen=True)
class NormWord:
    """A normalised word and the span of the original token it came from."""

    text: str
    start: int
    end: int


class Words(list[NormWord]):
    """Normalised words of one text, with their joined windows cached per window size.

    The windows scored against a whole set of phrases (a rule pack's, see `find_any`'s
    `universe`) are cached too, so the rules of a pack that look at the same text share
    one scoring pass.
    """

    def __init__(self, words: Iterable[NormWord] = ()) -> None:
        super().__init__(words)
        self._windows: dict[int, list[str]] = {}
        self._first: dict[int, dict[str, int]] = {}
        self._scored: dict[tuple[_Plan, float], dict[int, list[Candidate]]] = {}

    def scored(self, plan: _Plan, threshold: float) -> dict[int, list[Candidate]]:
        """`_candidates` of this text for a plan, computed once per plan and threshold."""
        key = (plan, threshold)
        if key not in self._scored:
            self._scored[key] = _candidates(self, plan, threshold)
        return self._scored[key]

    def windows(self, size: int) -> list[str]:
        """Every run of `size` consecutive words, space-joined, in order."""
        if size not in self._windows:
            texts = [w.text for w in self]
            self._windows[size] = [
                " ".join(texts[i : i + size]) for i in range(len(texts) - size + 1)
            ]
        return self._windows[size]

    def first_window(self, size: int) -> dict[str, int]:
        """Each distinct window of `size` words and the index of its first occurrence."""
        if size not in self._first:
            first: dict[str, int] = {}
            for i, window in enumerate(self.windows(size)):
                first.setdefault(window, i)
            self._first[size] = first
        return self._first[size]


def _expand(token: str) -> tuple[str, ...]:
    word = token.lower().replace(_APOSTROPHE, "'")
    if word in _CONTRACTIONS:
        return _CONTRACTIONS[word]
    for suffix, expansion in _SUFFIXES.items():
        if word.endswith(suffix) and len(word) > len(suffix):
            return (word[: -len(suffix)], *expansion)
    if word.endswith("'s") and len(word) > 2:
        return (word[:-2], "is")  # "it's", "that's", "call's": a possessive reads fine too
    return (word.replace("'", ""),)


def normalise(text: str) -> Words:
    """Split text into normalised words, each with its span in `text`."""
    words = Words()
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token.startswith("["):
            words.append(NormWord(token, match.start(), match.end()))
            continue
        for part in _expand(token):
            if part and part not in FILLERS:
                words.append(NormWord(part, match.start(), match.end()))
    return words


def normalise_phrase(phrase: str) -> str:
    """The normalised form of a rule phrase: the words of `normalise`, space-joined."""
    return " ".join(w.text for w in normalise(phrase))


@dataclass(frozen=True)
class PhraseMatch:
    """Where a phrase matched: its span in the original text and how similar it was (0-100)."""

    phrase: str
    start: int
    end: int
    similarity: float


@dataclass(frozen=True)
class MatchOptions:
    """How strictly phrases match."""

    fuzzy: bool = True
    threshold: float = 85.0
    min_fuzzy_chars: int = 6
    """Phrases shorter than this (normalised) must match exactly: short words fuzz too easily."""
    word_threshold: float = 75.0
    """Lowest similarity of each aligned word pair."""
    exact_word_chars: int = 3
    """Phrase words this short must be recognised exactly."""


def _joinable(words: Sequence[str], options: MatchOptions, heard: bool) -> bool:
    """Whether words may be run together in a split (heard side) or merge (phrase side)."""
    if any(w in NEGATIONS or w.startswith("[") for w in words):
        return False
    return heard or all(len(w) > options.exact_word_chars for w in words)


def _word_ok(phrase_word: str, heard: str, options: MatchOptions) -> bool:
    if phrase_word == heard:
        return True
    if len(phrase_word) <= options.exact_word_chars or phrase_word.startswith("["):
        return False
    return fuzz.ratio(phrase_word, heard) >= options.word_threshold


def words_align(phrase: Sequence[str], heard: Sequence[str], options: MatchOptions) -> bool:
    """Whether every phrase word lines up with heard words (allowing one-to-two splits/merges)."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        if i == len(phrase) or j == len(heard):
            return i == len(phrase) and j == len(heard)
        if (i, j) not in memo:
            memo[(i, j)] = (
                (_word_ok(phrase[i], heard[j], options) and go(i + 1, j + 1))
                or (
                    j + 1 < len(heard)
                    and _joinable(heard[j : j + 2], options, heard=True)
                    and _word_ok(phrase[i], heard[j] + heard[j + 1], options)
                    and go(i + 1, j + 2)
                )
                or (
                    i + 1 < len(phrase)
                    and _joinable(phrase[i : i + 2], options, heard=False)
                    and fuzz.ratio(phrase[i] + phrase[i + 1], heard[j]) >= MERGE_THRESHOLD
                    and go(i + 2, j + 1)
                )
            )
        return memo[(i, j)]

    return go(0, 0)


Candidate = tuple[float, int, int, int]
"""A window worth aligning: (similarity, size order, window index, window size)."""


@dataclass(frozen=True, eq=False)
class _Plan:
    """How one list of phrases is scored, worked out once per list (hashed by identity)."""

    phrases: tuple[tuple[str, int, int], ...]
    """Each phrase, its word count and its index among the fuzzy phrases (-1: exact only)."""
    queries: list[str]
    """The fuzzy phrases in order: one row of the score matrix each."""
    rows: tuple[tuple[int, dict[int, int]], ...]
    """Per row: its fuzzy index and the window sizes it is compared with (size -> order)."""
    sizes: tuple[int, ...]
    """Every window size some row is compared with."""
    fuzzy_index: dict[str, int]
    """Each fuzzy phrase's index (the first, for a phrase listed twice)."""
    fuzzy_position: tuple[int, ...]
    """Per fuzzy index, the phrase's position in `phrases`."""
    exact_positions: tuple[int, ...]
    """Positions of the phrases matched exactly only (empty phrases left out)."""

    @property
    def fuzzy(self) -> bool:
        """Whether any phrase is matched fuzzily."""
        return bool(self.queries)


@functools.lru_cache(maxsize=4096)
def _plan(phrases: tuple[str, ...], fuzzy: bool, min_fuzzy_chars: int) -> _Plan:
    sized: list[tuple[str, int, int]] = []
    queries: list[str] = []
    rows: list[tuple[int, dict[int, int]]] = []
    sizes: set[int] = set()
    fuzzy_index: dict[str, int] = {}
    for phrase in phrases:
        k = len(phrase.split())
        if not k or not fuzzy or len(phrase) < min_fuzzy_chars:
            sized.append((phrase, k, -1))
            continue
        index = len(queries)
        sized.append((phrase, k, index))
        fuzzy_index.setdefault(phrase, index)
        # windows of k, k-1 and k+1 words, in that order of preference
        allowed = {size: order for order, size in enumerate(n for n in (k, k - 1, k + 1) if n >= 1)}
        queries.append(phrase)
        rows.append((index, allowed))
        sizes.update(allowed)
    return _Plan(
        tuple(sized),
        queries,
        tuple(rows),
        tuple(sorted(sizes)),
        fuzzy_index,
        tuple(pos for pos, (_, _, index) in enumerate(sized) if index >= 0),
        tuple(pos for pos, (_, k, index) in enumerate(sized) if index < 0 and k),
    )


@functools.lru_cache(maxsize=4096)
def _within(plan: _Plan, whole: _Plan) -> tuple[tuple[int, int], ...] | None:
    """Each fuzzy phrase's index in `plan` and in `whole`; None if `whole` lacks one."""
    if not all(p in whole.fuzzy_index for p in plan.fuzzy_index):
        return None
    return tuple((i, whole.fuzzy_index[p]) for p, _, i in plan.phrases if i >= 0)


def _candidates(text: Words, plan: _Plan, threshold: float) -> dict[int, list[Candidate]]:
    """Per fuzzy phrase (by index) with any, the windows at or above the threshold, best first.

    Every phrase is scored against the windows of every size in one C call
    (`rapidfuzz.process.cdist`); the pairs whose sizes do not fit (a phrase is compared
    with windows of one word fewer to one word more) are dropped after. A call per size
    cost more than the comparisons it saved: most pairs of unlike lengths are rejected
    at once by the score cutoff.
    """
    windows: list[str] = []
    offsets: list[int] = []  # per size in plan.sizes: the column of its first window
    for size in plan.sizes:
        offsets.append(len(windows))
        windows.extend(text.windows(size))
    if not windows:
        return {}
    scores = process.cdist(
        plan.queries, windows, scorer=fuzz.ratio, score_cutoff=threshold, dtype=np.float64
    )
    found: dict[int, list[Candidate]] = {}
    # Most rows have no window at the cutoff: find the rows with one first (np.nonzero over
    # the whole matrix cost more than the scoring, ~90 us for 128 phrases x 100 windows).
    for row in np.flatnonzero(scores.max(axis=1)).tolist():
        index, allowed = plan.rows[row]
        line = scores[row]
        for col in np.flatnonzero(line).tolist():
            which = bisect.bisect_right(offsets, col) - 1
            size = plan.sizes[which]
            order = allowed.get(size)
            if order is not None:
                found.setdefault(index, []).append(
                    (float(line[col]), order, col - offsets[which], size)
                )
    for candidates in found.values():
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    return found


def _exact(text: Words, phrase: str, k: int) -> PhraseMatch | None:
    i = text.first_window(k).get(phrase)
    if i is None:
        return None
    return PhraseMatch(phrase, text[i].start, text[i + k - 1].end, 100.0)


def _aligned(
    text: Words, phrase: str, candidates: list[Candidate], options: MatchOptions
) -> PhraseMatch | None:
    """The first candidate (best first) whose words line up with the phrase's."""
    target = phrase.split()
    for similarity, _, i, size in candidates:
        window = text[i : i + size]
        if similarity == 100.0 or words_align(target, [w.text for w in window], options):
            return PhraseMatch(phrase, window[0].start, window[-1].end, similarity)
    return None


def _each_match(
    words: Sequence[NormWord],
    phrases: Iterable[str],
    options: MatchOptions,
    universe: tuple[str, ...] | None = None,
) -> Iterator[PhraseMatch]:
    """In phrase order, the best match of each phrase that matches (fuzzy ones scored together).

    Only phrases that can match are looked at: the exact ones, and the fuzzy ones with a
    window at or above the threshold. With a `universe` (every phrase a caller will ask
    about with these options, e.g. all of a rule pack's), the text is scored against the
    whole universe once and each list takes its phrases' windows from that: a phrase's
    candidates do not depend on which other phrases are scored with it, so the matches
    are the same.
    """
    plan = _plan(tuple(phrases), options.fuzzy, options.min_fuzzy_chars)
    if not words:
        return
    text = words if isinstance(words, Words) else Words(words)
    whole = (
        _plan(universe, options.fuzzy, options.min_fuzzy_chars)
        if universe is not None and plan.fuzzy
        else None
    )
    pairs = _within(plan, whole) if whole is not None else None
    if whole is not None and pairs is not None:
        shared = text.scored(whole, options.threshold)
        scored = {i: shared[w] for i, w in pairs if w in shared}
    else:
        scored = _candidates(text, plan, options.threshold) if plan.fuzzy else {}
    positions = [plan.fuzzy_position[i] for i in scored]
    if plan.exact_positions:
        positions.extend(plan.exact_positions)
    for position in sorted(positions):
        phrase, k, fuzzy_index = plan.phrases[position]
        if fuzzy_index < 0:
            found = _exact(text, phrase, k)
        else:
            found = _aligned(text, phrase, scored[fuzzy_index], options)
        if found is not None:
            yield found


def find_phrase(
    words: Sequence[NormWord], phrase: str, options: MatchOptions
) -> PhraseMatch | None:
    """The best match of one normalised phrase in the words, or None below the threshold."""
    return next(_each_match(words, [phrase], options), None)


def find_any(
    words: Sequence[NormWord],
    phrases: Iterable[str],
    options: MatchOptions,
    universe: tuple[str, ...] | None = None,
) -> PhraseMatch | None:
    """The best match among several normalised phrases (the earliest on ties)."""
    best: PhraseMatch | None = None
    for found in _each_match(words, phrases, options, universe):
        if best is None or found.similarity > best.similarity:
            best = found
            if found.similarity == 100.0:
                break
    return best


def find_all(
    words: Sequence[NormWord],
    phrases: Iterable[str],
    options: MatchOptions,
    universe: tuple[str, ...] | None = None,
) -> list[PhraseMatch]:
    """Every phrase that matches, each at its best place."""
    return list(_each_match(words, phrases, options, universe))
