"""Agent capabilities: normalisation, derivation from a role and prompt, and fuzzy matching (pure).

A capability is free text ("api_design", "REST API design", "PostgreSQL tuning"). Text becomes
*terms*: words split on anything but letters and digits and on camelCase (unless the whole word is
a known term, so "TypeScript" stays one word), lowercased, lightly stemmed ("designing" → "design",
"apis" → "api", "optimization" → "optimiz"), multi-word phrases joined ("machine learning" → ml),
and synonyms folded onto one canonical term ("rest", "http" → api). Known technologies also
*imply* broader terms ("react" → frontend, "postgresql" → database), but never the reverse: a
query for "database" finds a PostgreSQL agent, a query for "postgres" does not find a MySQL one.

A query matches a capability when every query term is covered by the capability's terms. Each
term scores 1.0 when the same word (after stemming) appears, 0.9 through a synonym and 0.7
through an implication; coverage is their mean, and specificity scales it down when the
capability is broader than the query (query terms / capability terms). An agent's score is its
best single capability; a query only covered by several capabilities together scores half.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

EXACT, SYNONYM, IMPLIED = 1.0, 0.9, 0.7
SPLIT_PENALTY = 0.5

_CHUNK = re.compile(r"[A-Za-z0-9]+")
# An acronym keeps a plural "s" ("APIs"); "HTTPServer" → HTTP, Server.
_CAMEL = re.compile(r"[A-Z]+s?(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_MAX_PHRASE = 3


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


_STOPWORDS = _wordset(
    "a an and or the of for in on with to by at as is are be from into via using use your you "
    "we our it its this that who will can expert experienced skilled proficient strong deep "
    "knowledge experience specialist specialised specialized"
)

# Equivalent words and phrases, folded onto the canonical term (the key).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "api": ("api", "rest", "restful", "http", "endpoint", "web service"),
    "database": ("database", "db", "sql", "rdbms", "datastore", "data store"),
    "frontend": ("frontend", "front end", "ui", "user interface", "client side"),
    "backend": ("backend", "back end", "server side"),
    "security": (
        "security",
        "secure",
        "auth",
        "authentication",
        "authorization",
        "authorisation",
        "authn",
        "authz",
        "appsec",
        "infosec",
    ),
    "test": ("test", "testing", "tester", "qa", "quality assurance"),
    "devops": ("devops", "dev ops", "sre", "site reliability", "infrastructure", "infra"),
    "ci_cd": (
        "ci",
        "cd",
        "cicd",
        "continuous integration",
        "continuous delivery",
        "continuous deployment",
    ),
    "docs": ("docs", "doc", "documentation", "document", "technical writing"),
    "ml": ("ml", "machine learning"),
    "ai": ("ai", "artificial intelligence"),
    "optimize": ("optimize", "optimise", "optimization", "optimisation", "tune", "tuning"),
    "performance": ("performance", "perf"),
    "design": ("design", "designer", "architecture", "architect"),
    "deploy": ("deploy", "deployment", "release"),
    "review": ("review", "audit"),
    "code": ("code", "coding", "programming"),
    "container": ("container", "containerization", "containerisation", "containerize"),
    "kubernetes": ("kubernetes", "k8s"),
    "javascript": ("javascript", "js", "ecmascript", "java script"),
    "typescript": ("typescript", "ts", "type script"),
    "python": ("python", "py"),
    "golang": ("golang",),
    "nodejs": ("nodejs", "node js"),
    "nextjs": ("nextjs", "next js"),
    "react": ("react", "reactjs", "react js"),
    "vue": ("vue", "vuejs", "vue js"),
    "postgres": ("postgres", "postgresql", "psql"),
    "mongodb": ("mongodb", "mongo"),
    "monitoring": ("monitoring", "monitor", "observability", "telemetry", "alerting"),
    "ux": ("ux", "user experience"),
    "automate": ("automate", "automation"),
    "github_actions": ("github actions",),
    "deep_learning": ("deep learning",),
    "mobile": ("mobile",),
    "cloud": ("cloud",),
}

# Narrower term → broader terms it implies (one way; closed transitively below).
_IMPLIES: dict[str, tuple[str, ...]] = {
    "react": ("frontend",),
    "vue": ("frontend",),
    "angular": ("frontend",),
    "svelte": ("frontend",),
    "nextjs": ("react",),
    "css": ("frontend",),
    "html": ("frontend",),
    "tailwind": ("css",),
    "ux": ("frontend",),
    "django": ("backend", "python"),
    "flask": ("backend", "python"),
    "fastapi": ("backend", "python", "api"),
    "express": ("backend", "nodejs"),
    "nodejs": ("backend", "javascript"),
    "spring": ("backend", "java"),
    "rails": ("backend", "ruby"),
    "postgres": ("database",),
    "mysql": ("database",),
    "mariadb": ("database",),
    "sqlite": ("database",),
    "mongodb": ("database",),
    "dynamodb": ("database",),
    "cassandra": ("database",),
    "redis": ("database", "cache"),
    "graphql": ("api",),
    "grpc": ("api",),
    "openapi": ("api",),
    "swagger": ("api",),
    "oauth": ("security",),
    "jwt": ("security",),
    "owasp": ("security",),
    "encryption": ("security",),
    "pentest": ("security",),
    "docker": ("container",),
    "kubernetes": ("container", "devops"),
    "helm": ("kubernetes",),
    "terraform": ("devops",),
    "ansible": ("devops",),
    "aws": ("cloud",),
    "gcp": ("cloud",),
    "azure": ("cloud",),
    "pytest": ("test", "python"),
    "jest": ("test", "javascript"),
    "cypress": ("test",),
    "selenium": ("test",),
    "playwright": ("test",),
    "junit": ("test", "java"),
    "pytorch": ("ml", "python"),
    "tensorflow": ("ml",),
    "sklearn": ("ml", "python"),
    "deep_learning": ("ml",),
    "ml": ("ai",),
    "llm": ("ai",),
    "ios": ("mobile",),
    "android": ("mobile",),
    "swift": ("ios",),
    "kotlin": ("android",),
    "flutter": ("mobile",),
    "prometheus": ("monitoring",),
    "grafana": ("monitoring",),
    "jenkins": ("ci_cd",),
    "github_actions": ("ci_cd",),
}

# Derivation: terms that stand for a capability on their own, and the label each is reported as.
# Terms missing here (design, review, optimize, code, ...) only count inside a compound.
_LABELS: dict[str, str] = {
    "api": "api",
    "database": "database",
    "frontend": "frontend",
    "backend": "backend",
    "security": "security",
    "test": "testing",
    "devops": "devops",
    "ci_cd": "ci_cd",
    "docs": "documentation",
    "ml": "machine_learning",
    "ai": "ai",
    "performance": "performance",
    "deploy": "deployment",
    "container": "containers",
    "monitoring": "monitoring",
    "ux": "ux",
    "mobile": "mobile",
    "cloud": "cloud",
    "cache": "caching",
    "postgres": "postgresql",
    "golang": "go",
    "deep_learning": "deep_learning",
    "github_actions": "github_actions",
    **{
        t: t
        for t in _wordset(
            "react vue angular svelte nextjs css html tailwind typescript javascript python "
            "java ruby rust kotlin swift nodejs django flask fastapi express spring rails "
            "mysql mariadb sqlite mongodb dynamodb cassandra redis graphql grpc openapi oauth "
            "jwt docker kubernetes helm terraform ansible aws gcp azure pytest jest cypress "
            "selenium playwright pytorch tensorflow llm ios android flutter prometheus grafana "
            "jenkins kafka elasticsearch"
        )
    },
}
# Two terms anywhere in the text make a compound capability.
_COMPOUNDS: tuple[tuple[str, str, str], ...] = (
    ("api", "design", "api_design"),
    ("database", "design", "database_design"),
    ("database", "optimize", "database_optimization"),
    ("frontend", "design", "ui_design"),
    ("code", "review", "code_review"),
    ("security", "review", "security_review"),
    ("test", "automate", "test_automation"),
    ("performance", "optimize", "performance_optimization"),
)
# Everyday words that are only a technology when written with a capital ("React", "Express").
_CASED_ONLY = _wordset("react express spring rails swift flask jest helm")
# Words too ambiguous in prose to derive anything from ("the rest of", "cd /workspace").
_NEVER_DERIVE = frozenset({"rest", "cd", "document", "release", "monitor"})


def stem(word: str) -> str:
    """Light suffix stripping; both sides of a comparison go through it, so stems need not be
    words ("optimization", "optimizing", "optimize" → "optimiz")."""
    w = word.lower()
    if len(w) <= 3 or w.isdigit():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us")) and not (w.endswith("is") and len(w) > 4):
        w = w[:-1]
    for suffix, repl in (("ization", "ize"), ("isation", "ize"), ("ation", "ate")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)] + repl
            break
    else:
        if w.endswith("ment") and len(w) >= 8:
            w = w[:-4]
        elif w.endswith("ing") and len(w) >= 7:
            w = _undouble(w[:-3])
        elif w.endswith("ed") and len(w) >= 6:
            w = _undouble(w[:-2])
    if w.endswith("e") and not w.endswith("ee") and len(w) > 4:
        w = w[:-1]
    return w


def _undouble(w: str) -> str:
    if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "lsz":
        return w[:-1]
    return w


@dataclass(frozen=True)
class _Word:
    stem: str
    cased: bool  # written with a capital letter


def _words(text: str) -> list[_Word]:
    out: list[_Word] = []
    for chunk in _CHUNK.findall(text):
        mixed = not (chunk.islower() or chunk.isupper() or chunk.isdigit())
        parts = _CAMEL.findall(chunk) if mixed and stem(chunk) not in _KNOWN else [chunk]
        for part in parts:
            s = stem(part)
            if s not in _STOP_STEMS:
                out.append(_Word(s, part != part.lower()))
    return out


@dataclass(frozen=True)
class _Term:
    surface: str  # the stem(s) as written, a phrase's joined by "_"
    canonical: str
    cased: bool


def _terms(text: str) -> list[_Term]:
    words = _words(text)
    out: list[_Term] = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_PHRASE, len(words) - i), 0, -1):
            group = words[i : i + n]
            key = tuple(w.stem for w in group)
            canonical = _CANON.get(key)
            if canonical is not None or n == 1:
                surface = "_".join(key)
                out.append(_Term(surface, canonical or surface, any(w.cased for w in group)))
                i += n
                break
    return out


def _phrase_key(phrase: str) -> tuple[str, ...]:
    return tuple(stem(w) for w in phrase.replace("_", " ").split())


_CANON: dict[tuple[str, ...], str] = {
    _phrase_key(variant): key for key, variants in _SYNONYMS.items() for variant in (key, *variants)
}


def _c(word: str) -> str:
    """The canonical term of a word written in the tables above."""
    key = _phrase_key(word)
    return _CANON.get(key, "_".join(key))


def _close(implies: dict[str, tuple[str, ...]]) -> dict[str, frozenset[str]]:
    direct = {_c(k): {_c(v) for v in vs} for k, vs in implies.items()}
    closed: dict[str, frozenset[str]] = {}
    for term, broader in direct.items():
        seen: set[str] = set()
        todo = list(broader)
        while todo:
            t = todo.pop()
            if t not in seen:
                seen.add(t)
                todo.extend(direct.get(t, ()))
        closed[term] = frozenset(seen - {term})
    return closed


_BROADER = _close(_IMPLIES)
_STOP_STEMS = frozenset(stem(w) for w in _STOPWORDS)
_LABEL_OF = {_c(k): v for k, v in _LABELS.items()}
_COMPOUND_TERMS = tuple((_c(a), _c(b), label) for a, b, label in _COMPOUNDS)
_CASED_ONLY_STEMS = frozenset(stem(w) for w in _CASED_ONLY)
_NEVER_DERIVE_STEMS = frozenset(stem(w) for w in _NEVER_DERIVE)
# Whole words that camelCase splitting must leave alone ("TypeScript", "GraphQL", "GitHub").
_KNOWN = (
    frozenset(w for key in _CANON for w in key)
    | frozenset(_BROADER)
    | frozenset(_LABEL_OF)
    | frozenset(stem(w) for w in ("github", "gitlab", "devops", "openai"))
)


@dataclass(frozen=True)
class Analysed:
    """A capability or a query as sets of terms."""

    surfaces: frozenset[str]
    canonical: frozenset[str]
    implied: frozenset[str]  # broader terms the canonical ones imply, minus those


@cache
def analyse(text: str) -> Analysed:
    terms = _terms(text)
    canonical = frozenset(t.canonical for t in terms)
    implied = frozenset(b for c in canonical for b in _BROADER.get(c, ())) - canonical
    return Analysed(frozenset(t.surface for t in terms), canonical, implied)


def normalize(text: str) -> str:
    """A stable key for a capability: its canonical terms, sorted, joined by "_"."""
    return "_".join(sorted(analyse(text).canonical))


def _coverage(query: Analysed, cap: Analysed) -> float | None:
    """Mean per-term weight when the capability covers every query term, else None."""
    total = 0.0
    for surface in query.surfaces:
        term = _CANON.get(tuple(surface.split("_")), surface)
        if surface in cap.surfaces:
            total += EXACT  # the same written word, not just the same concept
        elif term in cap.canonical:
            total += SYNONYM
        elif term in cap.implied:
            total += IMPLIED
        else:
            return None
    return total / len(query.surfaces)


def _specificity(query: Analysed, cap: Analysed) -> float:
    return min(1.0, len(query.canonical) / max(1, len(cap.canonical)))


def is_meaningful(query: str) -> bool:
    """Whether a query has any term left after stop words are dropped."""
    return bool(analyse(query).canonical)


def match_score(query: str, capabilities: Sequence[str]) -> float | None:
    """How well an agent with these capabilities answers the query (0..1]; None: not at all."""
    q = analyse(query)
    if not q.canonical:
        return None
    caps = [analyse(c) for c in capabilities]
    best: float | None = None
    for cap in caps:
        coverage = _coverage(q, cap)
        if coverage is not None:
            score = coverage * _specificity(q, cap)
            best = score if best is None else max(best, score)
    if best is None and len(caps) > 1:
        union = Analysed(
            frozenset().union(*(c.surfaces for c in caps)),
            frozenset().union(*(c.canonical for c in caps)),
            frozenset().union(*(c.implied for c in caps)),
        )
        coverage = _coverage(q, union)
        # Several capabilities together: the union's breadth says nothing about specificity.
        best = None if coverage is None else SPLIT_PENALTY * coverage
    return None if best is None else round(best, 3)


def role_matches(query: str, role: str) -> bool:
    """A case-insensitive substring of the role, or every query term among the role's terms."""
    q = query.strip().lower()
    if not q or q in role.lower():
        return True
    wanted = analyse(query).canonical
    return bool(wanted) and wanted <= analyse(role).canonical


def derive(role: str | None, description: str | None, system_prompt: str | None) -> list[str]:
    """Capabilities of an agent that declared none, read from its role, description and prompt
    against a fixed vocabulary (sorted, so the same text always gives the same list)."""
    text = "\n".join(t for t in (role, description, system_prompt) if t)
    concepts: set[str] = set()
    for term in _terms(text):
        if term.surface in _NEVER_DERIVE_STEMS:
            continue
        if term.surface in _CASED_ONLY_STEMS and not term.cased:
            continue
        concepts.add(term.canonical)
    concepts |= {b for c in concepts for b in _BROADER.get(c, ())}
    labels = {_LABEL_OF[c] for c in concepts if c in _LABEL_OF}
    labels |= {label for a, b, label in _COMPOUND_TERMS if a in concepts and b in concepts}
    return sorted(labels)


Source = Literal["declared", "derived"]


def capabilities_of(agent: Mapping[str, object]) -> tuple[list[str], Source]:
    """An agent's declared capabilities, else derived ones; and which ("declared"/"derived")."""
    declared = agent.get("capabilities")
    if isinstance(declared, list) and declared:
        return [str(c) for c in declared], "declared"
    role, description, prompt = (
        _text(agent.get(k)) for k in ("role", "description", "system_prompt")
    )
    return derive(role, description, prompt), "derived"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
