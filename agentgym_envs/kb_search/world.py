"""The generated world: people and the companies they work for, each fact drawn at random from a seed."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from retrieval_server.index import STOP_WORDS, TOKENIZER

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "th", "x"]
_COMPANY_KINDS = ["Works", "Mills", "Labs", "Foundry", "Traders", "Shipping", "Textiles", "Press"]


@dataclass(frozen=True)
class Company:
    name: str
    founded: int
    city: str

    def document(self) -> str:
        return f"{self.name}\n{self.name} is a company founded in {self.founded}, based in {self.city}."


@dataclass(frozen=True)
class Person:
    name: str
    born: int
    city: str
    employer: Company

    def document(self) -> str:
        return (f"{self.name}\n{self.name} was born in {self.born} in {self.city}. "
                f"{self.name} works for {self.employer.name}.")


@dataclass(frozen=True)
class World:
    people: tuple[Person, ...]
    companies: tuple[Company, ...]

    def corpus(self) -> list[dict[str, Any]]:
        """The documents the retrieval server indexes, in Search-R1's layout (first line of `contents` = title)."""
        docs = [{"id": f"company-{i}", "contents": c.document()} for i, c in enumerate(self.companies)]
        docs += [{"id": f"person-{i}", "contents": p.document()} for i, p in enumerate(self.people)]
        return docs

    def split_people(self, split: str) -> list[Person]:
        """`test` asks about every fifth person, the other splits about the rest: held-out questions are about
        people no training question mentions."""
        test = split == "test"
        return [p for i, p in enumerate(self.people) if (i % 5 == 0) == test]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)


def _index_terms(words: list[str]) -> list[str]:
    """The term the retrieval server's index makes of each word (its FTS5 tokenizer: lower case, Porter stem)."""
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{TOKENIZER}')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    db.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)", list(enumerate(words, 1)))
    terms = dict(db.execute("SELECT doc, term FROM v"))
    db.close()
    return [terms.get(i, "") for i in range(1, len(words) + 1)]


def _searchable_words(rng: random.Random, count: int, syllables: int, taken: set[str]) -> list[str]:
    """`count` capitalised made-up words, each one index term that no other generated word has and that is no
    stop word: "Kras" and "Kra" stem alike and "No" is dropped from queries, so a person named so could not be
    found by name."""
    out: list[str] = []
    while len(out) < count:
        candidates = [_word(rng, syllables).capitalize() for _ in range(count - len(out))]
        for word, term in zip(candidates, _index_terms(candidates)):
            if term and term not in taken and term not in STOP_WORDS and len(out) < count:
                taken.add(term)
                out.append(word)
    return out


def _unique(rng: random.Random, count: int, make) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(make(rng), None)
    return list(seen)


@lru_cache(maxsize=8)
def make_world(seed: int = 0, people: int = 1000, companies: int = 60) -> World:
    rng = random.Random(f"kb-world-{seed}")
    cities = [w.capitalize() for w in _unique(rng, 40, lambda r: _word(r, 2))]
    company_names = _unique(rng, companies, lambda r: f"{_word(r, 2).capitalize()} {r.choice(_COMPANY_KINDS)}")
    firms = tuple(Company(n, rng.randint(1800, 1999), rng.choice(cities)) for n in company_names)
    # People are combinations of a pool of given names and surnames, as real names are: each part recurs across
    # many people, so a question's name is made of words the model has seen and can copy into a query, while the
    # combination (and so the person's facts) is new for held-out questions. Wholly made-up names split into
    # unfamiliar sub-word pieces that a small model garbles when it copies them (the first learning run).
    pool = max(8, int(people ** 0.5 * 1.3))
    taken = set(_index_terms(cities + company_names))
    given = _searchable_words(rng, pool, 1, taken)
    family = _searchable_words(rng, pool, 2, taken)
    if people > len(given) * len(family):
        raise ValueError(f"{people} people need more than {len(given)} x {len(family)} name combinations")
    person_names = _unique(rng, people, lambda r: f"{r.choice(given)} {r.choice(family)}")
    folks = tuple(Person(n, rng.randint(1900, 1999), rng.choice(cities), rng.choice(firms)) for n in person_names)
    return World(people=folks, companies=firms)
