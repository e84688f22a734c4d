"""Capability normalisation, matching and derivation (pure)."""

from __future__ import annotations

import pytest

from domain.capabilities import (
    capabilities_of,
    derive,
    is_meaningful,
    match_score,
    normalize,
    role_matches,
    stem,
)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("designing", "design"),
        ("designs", "design"),
        ("APIs", "api"),
        ("libraries", "library"),
        ("optimization", "optimiz"),
        ("optimizing", "optimiz"),
        ("optimize", "optimiz"),
        ("deployment", "deploy"),
        ("mapping", "map"),
        ("redis", "redis"),
        ("status", "status"),
        ("api", "api"),
    ],
)
def test_stem(word: str, expected: str) -> None:
    assert stem(word) == expected


@pytest.mark.parametrize(
    "declared", ["api_design", "REST API design", "API-Design", "apiDesign", "api design", "APIs"]
)
def test_api_design_finds_its_spellings(declared: str) -> None:
    caps = [declared] if declared != "APIs" else ["designing APIs"]
    assert match_score("api design", caps) == 1.0


def test_synonyms_match_below_the_same_word() -> None:
    # "design" is the same word (1.0), "api" a synonym (0.9): their mean.
    assert match_score("api design", ["http endpoint design"]) == pytest.approx(0.95)
    assert match_score("db", ["database"]) == pytest.approx(0.9)
    assert match_score("front-end", ["frontend"]) == pytest.approx(0.9)
    assert match_score("testing", ["QA"]) == pytest.approx(0.9)
    assert match_score("auth", ["Security review"]) is not None


def test_unrelated_capabilities_do_not_match() -> None:
    assert match_score("api design", ["database optimization"]) is None
    assert match_score("api design", ["api"]) is None  # "design" is not covered
    assert match_score("java", ["JavaScript"]) is None  # camelCase keeps known words whole
    assert match_score("react", ["frontend"]) is None  # implications go one way only
    assert match_score("postgres", ["MySQL"]) is None


def test_implications_reach_broader_terms() -> None:
    assert match_score("frontend", ["React"]) == pytest.approx(0.7)
    assert match_score("database optimization", ["PostgreSQL tuning"]) == pytest.approx(0.8)
    assert match_score("security", ["OAuth flows"]) is not None
    assert match_score("frontend", ["Next.js"]) is not None  # nextjs → react → frontend


def test_broader_capabilities_score_lower_and_the_best_one_counts() -> None:
    exact = match_score("api design", ["api_design"])
    broad = match_score("api design", ["api design and documentation"])
    assert exact == 1.0 and broad is not None and broad < exact
    assert match_score("api design", ["documentation", "api_design"]) == 1.0


def test_a_query_covered_only_by_several_capabilities_scores_half() -> None:
    assert match_score("api design", ["api", "system design"]) == pytest.approx(0.5)
    assert match_score("api design", ["api", "testing"]) is None


def test_queries_without_words() -> None:
    assert not is_meaningful("  &&  ")
    assert not is_meaningful("the of and")
    assert match_score("--", ["api"]) is None
    assert is_meaningful("API")
    # Stop words drop out; "designer" is the same concept as "design", not the same word.
    assert match_score("experienced, specialized api designer", ["api_design"]) == 0.95


def test_normalize_is_a_stable_key() -> None:
    assert normalize("REST API Design") == normalize("api_design") == "api_design"


@pytest.mark.parametrize(
    ("query", "role", "matches"),
    [
        ("architect", "Backend Architect", True),
        ("BACKEND", "Backend Architect", True),
        ("backend architect", "Backend Architect", True),
        ("backend-architect", "Backend Architect", True),
        ("architects", "Backend Architect", True),
        ("front end", "Frontend Developer", True),
        ("end arch", "Backend Architect", True),  # a plain substring
        ("frontend", "Backend Architect", False),
        ("security", "Backend Architect", False),
    ],
)
def test_role_filter(query: str, role: str, matches: bool) -> None:
    assert role_matches(query, role) is matches


def test_derived_from_a_react_typescript_prompt() -> None:
    caps = derive("Frontend Developer", None, "Expert in React, TypeScript")
    assert {"react", "typescript", "frontend"} <= set(caps)
    assert caps == sorted(caps)


def test_derived_from_role_and_prompt() -> None:
    assert derive("Backend Architect", None, "You design APIs.") == [
        "api",
        "api_design",
        "backend",
    ]
    assert derive("Engineer", None, None) == []
    caps = derive("Data Scientist", "ML with PyTorch", "Tune PostgreSQL queries")
    assert {"machine_learning", "pytorch", "python", "postgresql", "database"} <= set(caps)
    assert "database_optimization" in caps


def test_derivation_ignores_everyday_words() -> None:
    # "react to", "the rest of", "cd /workspace" are not React, REST or CI/CD.
    assert derive("Helper", None, "cd /workspace, react to the rest of the messages") == []
    assert "react" in derive("Helper", None, "Builds UIs in React")


def test_derivation_is_deterministic() -> None:
    text = ("Platform Engineer", "Kubernetes, Terraform and AWS", "Keep CI green; Docker images")
    assert derive(*text) == derive(*text)
    assert {"kubernetes", "terraform", "aws", "cloud", "devops", "docker", "ci_cd"} <= set(
        derive(*text)
    )


def test_declared_capabilities_win_over_derived() -> None:
    declared = {"name": "a", "role": "React dev", "capabilities": ["api_design"]}
    assert capabilities_of(declared) == (["api_design"], "declared")
    undeclared = {"name": "b", "role": "React dev", "capabilities": []}
    caps, source = capabilities_of(undeclared)
    assert source == "derived" and "react" in caps
    assert match_score("frontend", caps) is not None
