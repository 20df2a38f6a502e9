"""Pure parts of hybrid search (codequarry.search): path globs, request validation, the
fusion of lexical and semantic rankings and the ranking of units (codequarry.answers)."""

from __future__ import annotations

import re

import pytest

from codequarry.answers import CONTAINER_YIELD, Unit, rank_units
from codequarry.errors import UsageError
from codequarry.search import (
    CODE_WEIGHT,
    ENGLISH_WEIGHT,
    NAMED_FILE_BOOST,
    SINGLE_IDENTIFIER_WEIGHT,
    SearchRequest,
    _Ranked,
    agreement,
    code_like,
    favour_named_files,
    file_stem,
    fuse,
    fuse_in_depth,
    glob_to_regex,
    lexical_weight,
)

PATHS = [
    "main.py", "setup.cfg", "a.py", "b.py", "c.py", "src/a.py", "src/app.pyc", "src/x/b.py",
    "src/x/y/test_deep.py", "srcs/a.py", "lib/src/a.py", "test_top.py", "tests/test_one.py",
    "tests/unit/test_two.py", "tests/helper.py", "docs/index.md", "docs/api/ref.md",
    "site/docs/page.md", "docsite/x.md",
]


def _matching(glob: str) -> set[str]:
    pattern = re.compile(glob_to_regex(glob))
    return {path for path in PATHS if pattern.search(path)}


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("src/**", {"src/a.py", "src/app.pyc", "src/x/b.py", "src/x/y/test_deep.py"}),
        ("*.py", {"main.py", "a.py", "b.py", "c.py", "src/a.py", "src/x/b.py",
                  "src/x/y/test_deep.py", "srcs/a.py", "lib/src/a.py", "test_top.py",
                  "tests/test_one.py", "tests/unit/test_two.py", "tests/helper.py"}),
        ("src/*.py", {"src/a.py"}),
        ("/src/*.py", {"src/a.py"}),
        ("**/test_*.py", {"src/x/y/test_deep.py", "test_top.py", "tests/test_one.py",
                          "tests/unit/test_two.py"}),
        ("tests/**/test_*.py", {"tests/test_one.py", "tests/unit/test_two.py"}),
        ("[ab].py", {"a.py", "b.py", "src/a.py", "src/x/b.py", "srcs/a.py", "lib/src/a.py"}),
        ("[!ab].py", {"c.py"}),
        ("?.py", {"a.py", "b.py", "c.py", "src/a.py", "src/x/b.py", "srcs/a.py",
                  "lib/src/a.py"}),
        ("docs/", {"docs/index.md", "docs/api/ref.md", "site/docs/page.md"}),
        ("docs/*.md", {"docs/index.md"}),
    ],
)
def test_glob_matches_exactly_the_expected_paths(glob: str, expected: set[str]) -> None:
    assert _matching(glob) == expected


def test_glob_metacharacters_of_regexes_are_literal() -> None:
    pattern = re.compile(glob_to_regex("lib/a+b(1).py"))
    assert pattern.search("lib/a+b(1).py")
    assert not pattern.search("lib/aab1.py")
    assert not pattern.search("lib/a+b(1)Xpy")


@pytest.mark.parametrize("glob", ["", "x" * 501])
def test_empty_or_too_long_glob_is_a_usage_error(glob: str) -> None:
    with pytest.raises(UsageError, match="1-500 characters"):
        glob_to_regex(glob)


def test_glob_with_an_invalid_character_range_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        glob_to_regex("[z-a].py")


def test_negated_character_class_does_not_match_a_slash() -> None:
    assert not re.search(glob_to_regex("src[!x]a.py"), "src/a.py")


# ------------------------------------------------------------------ request validation


def test_valid_request_validates_to_itself() -> None:
    request = SearchRequest("parse config", limit=50, mode="lexical")
    assert request.validate() is request
    assert SearchRequest("q", limit=1).validate().limit == 1


@pytest.mark.parametrize("query", ["", "   \n\t"])
def test_empty_query_is_rejected(query: str) -> None:
    with pytest.raises(UsageError, match="the query is empty"):
        SearchRequest(query).validate()


def test_query_over_2000_characters_is_rejected() -> None:
    with pytest.raises(UsageError, match="longer than 2000"):
        SearchRequest("x" * 2001).validate()


@pytest.mark.parametrize("limit", [0, 51, -1])
def test_limit_outside_1_to_50_is_rejected(limit: int) -> None:
    with pytest.raises(UsageError, match=f"limit must be between 1 and 50, got {limit}"):
        SearchRequest("q", limit=limit).validate()


def test_unknown_mode_is_rejected() -> None:
    request = SearchRequest("q", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="mode must be one of hybrid, semantic, lexical"):
        request.validate()


# ------------------------------------------------------------------ fusion


def _ranked(*scores: tuple[int, float]) -> list[_Ranked]:
    return [_Ranked("p", chunk_id, score) for chunk_id, score in scores]


# the vectors put chunk 1 far ahead; the words prefer chunks 2 and 3 and rank 1 last
SEMANTIC = _ranked((1, 0.90), (2, 0.50), (3, 0.45), (4, 0.40))
LEXICAL = _ranked((2, 10.0), (3, 9.0), (1, 1.0))


def test_far_ahead_semantic_winner_stays_on_top_when_the_lexical_weight_is_low() -> None:
    fused = fuse(LEXICAL, SEMANTIC, 0.15)
    assert fused[0].chunk_id == 1
    assert {r.chunk_id for r in fused} == {1, 2, 3, 4}


def test_strong_lexical_match_wins_when_the_lexical_weight_is_high() -> None:
    fused = fuse(LEXICAL, SEMANTIC, lexical_weight("parse_config", False))
    assert [r.chunk_id for r in fused][:2] == [2, 3]


def test_fused_scores_are_sorted_and_keep_chunks_found_by_one_side_only() -> None:
    fused = fuse(_ranked((7, 3.0)), SEMANTIC, 1.0)
    assert [r.score for r in fused] == sorted((r.score for r in fused), reverse=True)
    assert {r.chunk_id for r in fused} == {1, 2, 3, 4, 7}


def test_fusion_with_one_empty_side_keeps_the_other_order() -> None:
    assert [r.chunk_id for r in fuse(LEXICAL, [], 0.15)] == [2, 3, 1]
    assert [r.chunk_id for r in fuse([], SEMANTIC, 2.0)] == [1, 2, 3, 4]
    assert fuse([], [], 1.0) == []


def test_the_words_first_chunk_keeps_credit_from_the_vectors_29th_of_their_100() -> None:
    # each side gives fuse 100 candidates, scores evenly spaced; chunk 1000 is the words'
    # 1st and the vectors' 29th, chunk 1001 the words' 6th and the vectors' 3rd. fuse
    # measures each side over all it is given, so a 29th place still counts for much more
    # than a chunk not given: 1000 ranks second, above the best chunks only one side found
    words = [1000 if k == 0 else 1001 if k == 5 else k for k in range(100)]
    vectors = [1001 if k == 2 else 1000 if k == 28 else 200 + k for k in range(100)]
    fused = fuse(_ranked(*((i, 7.0 - 0.05 * k) for k, i in enumerate(words))),
                 _ranked(*((i, 0.70 - 0.002 * k) for k, i in enumerate(vectors))), ENGLISH_WEIGHT)
    assert [r.chunk_id for r in fused][:2] == [1001, 1000]


def test_fusion_in_depth_keeps_the_heads_order_and_ranks_deeper_candidates_below_it() -> None:
    words = _ranked(*((k, 10.0 - 0.1 * k) for k in range(60)))
    vectors = _ranked(*((100 + k, 0.9 - 0.005 * k) for k in range(60)))
    fused = fuse_in_depth(words, vectors, ENGLISH_WEIGHT, 30)
    head = fuse(words[:30], vectors[:30], ENGLISH_WEIGHT)
    assert fused[:len(head)] == head  # the tuned ranking of the top 30 of each side
    assert {r.chunk_id for r in fused} == set(range(60)) | set(range(100, 160))  # nothing lost
    assert max(r.score for r in fused[len(head):]) <= min(r.score for r in head)
    assert [r.chunk_id for r in fused] == [r.chunk_id for r in sorted(fused, key=lambda r: -r.score)]


def test_same_chunk_id_in_two_projects_is_not_merged() -> None:
    fused = fuse([_Ranked("a", 1, 1.0)], [_Ranked("b", 1, 1.0)], 1.0)
    assert {(r.project, r.chunk_id) for r in fused} == {("a", 1), ("b", 1)}


def test_a_lone_identifier_gets_the_highest_lexical_weight_and_code_in_a_sentence_the_tuned_one() -> None:
    english = lexical_weight("where do we retry failed http requests", False)
    assert english == ENGLISH_WEIGHT
    assert lexical_weight("parseConfig", False) == SINGLE_IDENTIFIER_WEIGHT > english
    assert lexical_weight("retry_request backoff", False) == CODE_WEIGHT
    assert lexical_weight("load the ConfigLoader", False) == CODE_WEIGHT


def test_a_query_word_naming_a_symbol_raises_the_lexical_weight() -> None:
    assert lexical_weight("retry", True) > lexical_weight("retry", False)


def test_an_english_question_leans_on_vectors_and_entirely_so_when_the_sides_disagree() -> None:
    question = "how do I read a gzip file line by line"
    assert lexical_weight(question, False) == ENGLISH_WEIGHT < 1.0
    assert lexical_weight(question, False, shared=3) == ENGLISH_WEIGHT
    assert lexical_weight(question, False, shared=0) < ENGLISH_WEIGHT
    # an English word that happens to name a symbol is no evidence of code in a sentence
    assert lexical_weight(question, True, shared=0) < ENGLISH_WEIGHT


def test_identifiers_and_error_strings_lean_on_words_whatever_the_sides_agree_on() -> None:
    assert lexical_weight("BadZipFile: File is not a zip file", False, shared=0) == CODE_WEIGHT
    assert lexical_weight("what does parse_qsl do with blank values", False, shared=0) == CODE_WEIGHT
    assert lexical_weight("why does --no-feature not work", False, shared=0) == CODE_WEIGHT
    assert lexical_weight("urlsplit", True, shared=0) == SINGLE_IDENTIFIER_WEIGHT


def test_code_like_tokens_are_identifiers_or_code_punctuation_but_not_plain_words() -> None:
    assert all(code_like(t) for t in ("parse_config", "parseConfig", "os.path", "run()", "a::b",
                                      "--help", "x-www-form-urlencoded", "key=value"))
    assert not any(code_like(t) for t in ("gzip", "HTTP", "read/write", "well-known", "e-mail", "How"))


def test_agreement_counts_the_chunks_both_sides_put_in_their_top_ten() -> None:
    lexical = _ranked(*[(i, 10.0 - i) for i in range(12)])
    semantic = _ranked((11, 0.9), (3, 0.8), (20, 0.7), (5, 0.6))
    assert agreement(lexical, semantic) == 2  # 3 and 5; 11 is below the lexical top 10
    assert agreement(lexical, []) == 0


def test_agreement_on_units_counts_two_windows_of_one_function_as_shared() -> None:
    # the words hit a function's body (chunk 1), the vectors its signature window (chunk 2)
    unit_of = {1: "run", 2: "run", 3: "stop", 4: "start"}.get
    lexical = _ranked((1, 5.0), (3, 4.0))
    semantic = _ranked((2, 0.9), (4, 0.8))
    assert agreement(lexical, semantic) == 0
    assert agreement(lexical, semantic, unit_of=lambda r: unit_of(r.chunk_id)) == 1
    # a chunk whose place is unknown (replaced meanwhile) agrees with nothing
    assert agreement(_ranked((9, 5.0)), _ranked((8, 0.9)), unit_of=lambda r: unit_of(r.chunk_id)) == 0


def test_a_query_word_naming_a_file_raises_that_files_chunks_by_the_named_file_boost() -> None:
    paths = {1: "lib/commands/exec.js", 2: "lib/commands/ls.js", 3: "lib/utils/ls-colors.js"}
    ranked = _ranked((1, 2.0), (2, 1.9), (3, 1.0))
    favoured = favour_named_files(ranked, "how does npm ls print the tree?", lambda r: paths[r.chunk_id])
    raised = 1.9 * (1 + NAMED_FILE_BOOST)
    assert [(r.chunk_id, r.score) for r in favoured] == [(2, raised), (1, 2.0), (3, 1.0)]
    # no file named by the query, only by a filler word, or paths unknown: the order stands
    assert favour_named_files(ranked, "how does the parser work", lambda r: paths[r.chunk_id]) == ranked
    assert favour_named_files(ranked, "how does it work", lambda r: "lib/how.js") == ranked
    assert favour_named_files(ranked, "npm ls", lambda r: None) == ranked


def test_a_file_stem_is_the_lowercased_name_without_its_extension() -> None:
    assert [file_stem(p) for p in ("lib/commands/ls.js", "Lock.java", "a/b/README", "x/.env.local")] == [
        "ls", "lock", "readme", ".env"]


# ------------------------------------------------------------------ units


def _unit(symbol: str | None, kind: str, start: int, end: int, best: float, *support: float,
          path: str = "locks.py") -> Unit:
    unit = Unit("p", path, start, end, symbol, kind, "python", best)
    unit.support.extend(support)
    return unit


def test_a_class_with_a_long_header_yields_to_its_matching_method() -> None:
    # 300 lines of class documentation matching in every window, and the method that answers
    header = _unit("Lock", "class", 1, 300, 5.0, 4.9, 4.8, 4.8, 4.7, 4.6, 4.5)
    method = _unit("Lock.release", "method", 310, 330, 4.0)
    other = _unit("release_all", "function", 1, 9, 3.9, path="other.py")
    ranked = rank_units([header, other, method])
    assert [u.symbol for u in ranked] == ["Lock.release", "Lock", "release_all"]
    assert ranked[1].score == ranked[0].score == 4.0  # it ranks as its member: scores stay sorted


def test_a_container_keeps_its_place_without_a_member_near_its_score() -> None:
    header = _unit("Lock", "class", 1, 30, 5.0)
    far = _unit("Lock.release", "method", 40, 50, 5.0 * CONTAINER_YIELD - 0.1)
    elsewhere = _unit("Other.release", "method", 40, 50, 4.9, path="other.py")  # not its member
    assert [u.symbol for u in rank_units([far, elsewhere, header])] == ["Lock", "Other.release",
                                                                        "Lock.release"]


def test_nested_containers_settle_first_and_functions_never_yield() -> None:
    outer = _unit("Lock", "class", 1, 20, 6.0)
    inner = _unit("Lock.Sync", "class", 30, 40, 5.0)
    method = _unit("Lock.Sync.release", "method", 42, 50, 4.0)
    function = _unit("run", "function", 1, 30, 6.0, path="run.py")
    nested = _unit("run.step", "function", 31, 40, 5.9, path="run.py")  # not a member unit
    ranked = rank_units([outer, function, inner, nested, method])
    assert [u.symbol for u in ranked] == ["run", "run.step", "Lock.Sync.release", "Lock.Sync", "Lock"]


def test_a_unit_is_supported_by_its_two_best_other_chunks_only() -> None:
    long_unit = _unit("long", "function", 1, 400, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    short = _unit("short", "function", 1, 9, 2.0, 1.5, path="short.py")
    ranked = rank_units([long_unit, short])
    assert [u.symbol for u in ranked] == ["long", "short"]
    assert [round(u.score, 6) for u in ranked] == [2.2, 2.15]


def test_support_counts_what_a_chunk_scores_above_the_lists_floor() -> None:
    # raw cosines: the long unit's other windows score at the ranked list's lowest score
    long_unit = _unit("long", "function", 1, 400, 0.62, 0.50, 0.50)
    short = _unit("short", "function", 1, 9, 0.63, path="short.py")
    assert [u.symbol for u in rank_units([long_unit, short], floor=0.5)] == ["short", "long"]
    assert [round(u.score, 6) for u in rank_units([long_unit, short], floor=0.5)] == [0.63, 0.62]
    assert [u.symbol for u in rank_units([long_unit, short])] == ["long", "short"]  # from 0: 0.72
