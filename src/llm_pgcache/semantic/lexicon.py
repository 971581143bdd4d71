"""The words the look-alike guard (`semantic.guard`) reads texts with: negations,
antonym pairs, number words, names that need no capital, relational words and
stopwords. English only.
"""

from __future__ import annotations

from typing import Final

NEGATIONS: Final = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "nowhere",
        "neither",
        "nor",
        "without",
        "cannot",
        "cant",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "wont",
        "wouldnt",
        "shouldnt",
        "couldnt",
        "hasnt",
        "havent",
        "hadnt",
        "aint",
        "nope",
    ]
)

_ANTONYM_PAIRS: Final = (
    "enable disable, enabled disabled, on off, add remove, install uninstall, import export, "
    "min max, minimum maximum, ascending descending, increase decrease, start stop, "
    "open close, upload download, encrypt decrypt, push pull, before after, above below, "
    "buy sell, up down, true false, yes no, left right, first last, oldest newest, "
    "old new, best worst, more less, most least, higher lower, larger smaller, "
    "bigger smaller, faster slower, hot cold, win lose, accept reject, allow deny, "
    "show hide, lock unlock, connect disconnect, include exclude, inside outside, "
    "input output, positive negative, success failure, male female, man woman, men women, "
    "boy girl, day night, north south, east west, early late, cheap expensive, "
    "light dark, always never, all none, plus minus, over under, inner outer, "
    "long short, wide narrow, heavy light, rich poor, love hate, like dislike, "
    "possible impossible, legal illegal, valid invalid, visible invisible, "
    "public private, read write, send receive, encode decode, compress decompress, "
    "attach detach, mount unmount, subscribe unsubscribe, follow unfollow, "
    "mute unmute, block unblock, sync async, synchronous asynchronous, "
    "client server, sender receiver, buyer seller, winner loser, husband wife, "
    "mother father, son daughter, brother sister, king queen, summer winter, "
    "morning evening, sunrise sunset, entrance exit, arrival departure, arrive depart, "
    "inbound outbound, ingress egress, upper lower, uppercase lowercase, "
    "horizontal vertical, asleep awake, happy sad, strong weak, fast slow"
)
ANTONYMS: Final[dict[str, frozenset[str]]] = {}
for _pair in _ANTONYM_PAIRS.split(","):
    _a, _b = _pair.split()
    ANTONYMS.setdefault(_a, frozenset())
    ANTONYMS.setdefault(_b, frozenset())
    ANTONYMS[_a] |= {_b}
    ANTONYMS[_b] |= {_a}

NUMBER_WORDS: Final = {
    word: str(value)
    for value, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000"}
NAMED: Final = frozenset(
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
)
# Words after which the next content word says a role: "from X", "to Y", "X than Y".
RELATIONAL: Final = frozenset(
    [
        "from",
        "to",
        "into",
        "onto",
        "than",
        "vs",
        "versus",
        "in",
        "per",
        "over",
        "under",
        "before",
        "after",
        "by",
        "toward",
        "towards",
    ]
)
STOPWORDS: Final = (
    frozenset(
        [
            "a",
            "an",
            "the",
            "is",
            "are",
            "was",
            "were",
            "be",
            "been",
            "being",
            "am",
            "do",
            "does",
            "did",
            "of",
            "for",
            "and",
            "or",
            "but",
            "if",
            "then",
            "so",
            "what",
            "whats",
            "what's",
            "which",
            "who",
            "whom",
            "whose",
            "how",
            "why",
            "when",
            "where",
            "there",
            "here",
            "it",
            "its",
            "it's",
            "this",
            "that",
            "these",
            "those",
            "i",
            "me",
            "my",
            "we",
            "our",
            "you",
            "your",
            "he",
            "him",
            "his",
            "she",
            "her",
            "they",
            "them",
            "their",
            "can",
            "could",
            "would",
            "should",
            "will",
            "shall",
            "may",
            "might",
            "must",
            "please",
            "tell",
            "me",
            "give",
            "show",
            "explain",
            "about",
            "with",
            "as",
            "at",
            "on",
            "in",
            "to",
            "from",
            "by",
            "into",
            "than",
            "vs",
            "versus",
            "per",
            "over",
            "under",
            "before",
            "after",
            "toward",
            "towards",
            "onto",
            "up",
            "down",
            "s",
        ]
    )
    - NEGATIONS
    - frozenset(ANTONYMS)
)
FUNCTION_WORDS: Final = STOPWORDS | RELATIONAL  # never content
