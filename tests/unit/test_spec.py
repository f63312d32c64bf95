"""Loading desired/: which files count, and that every bad input is reported at its file, line and field."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.models import spec_hash
from reconciler.spec import _load_parallel, _load_serial, desired_files, load_desired

GOOD = "resource_id: {id}\nowner: acme\nregion: eu-west-1\ndeploy_ref: v1\n"


@pytest.fixture
def desired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty desired/ under the working directory, so problems name files as `desired/<file>`."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "desired"
    path.mkdir()
    return path


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(directory: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_desired(directory=directory)
    return [str(problem) for problem in caught.value.problems]


def only_problem(directory: Path) -> str:
    found = problems(directory)
    assert len(found) == 1, found
    return found[0]


# --- which files count ------------------------------------------------------------------------


def test_loads_recursively_yaml_and_yml_only(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a"))
    write(desired, "team/b.yml", GOOD.format(id="b"))
    write(desired, "team/deep/c.yaml", GOOD.format(id="c"))
    write(desired, "notes.txt", "not: yaml: at all: [")
    write(desired, "d.yaml.bak", GOOD.format(id="d"))
    write(desired, "e.json", "{}")
    state = load_desired(directory=desired)
    assert sorted(state.resources) == ["a", "b", "c"]
    assert str(state.sources["c"]) == "desired/team/deep/c.yaml:1"


@pytest.mark.parametrize("name", [".hidden.yaml", "_draft.yaml", ".git/x.yaml", "_archive/x.yaml",
                                  "team/.wip/x.yml", "team/_old.yml"])
def test_names_starting_with_dot_or_underscore_are_skipped(desired: Path, name: str) -> None:
    write(desired, "ok.yaml", GOOD.format(id="ok"))
    write(desired, name, "this is: [broken")
    assert list(load_desired(directory=desired).resources) == ["ok"]
    assert all(".wip" not in str(p) and "_" not in p.name for p in desired_files(desired))


def test_several_documents_per_file_with_their_lines(desired: Path) -> None:
    write(desired, "fleet.yaml", GOOD.format(id="one") + "---\n" + GOOD.format(id="two") + "---\n"
          + "# comment\n" + GOOD.format(id="three"))
    state = load_desired(directory=desired)
    assert sorted(state.resources) == ["one", "three", "two"]
    assert [str(state.sources[i]) for i in ("one", "two", "three")] == [
        "desired/fleet.yaml:1", "desired/fleet.yaml:6", "desired/fleet.yaml:12"]


@pytest.mark.parametrize("text", ["", "# only a comment\n# and another\n", "---\n", "---\n---\n# c\n---\n"])
def test_empty_comment_only_and_stray_separator_files_are_fine(desired: Path, text: str) -> None:
    write(desired, "empty.yaml", text)
    write(desired, "real.yaml", "---\n" + GOOD.format(id="real") + "---\n")
    assert list(load_desired(directory=desired).resources) == ["real"]


def test_missing_directory_is_an_error(desired: Path) -> None:
    assert only_problem(desired / "nope") == f"{desired / 'nope'}: desired directory does not exist"


# --- one test per bad-input class: exact place and field ----------------------------------------


def test_unknown_key_gets_a_did_you_mean_hint(desired: Path) -> None:
    write(desired, "a.yaml", "resource_id: a\nowner: acme\nregoin: eu\nregion: eu\ndeploy_ref: v1\n")
    assert only_problem(desired) == "desired/a.yaml:3: regoin: unknown field (did you mean 'region'?)"


def test_unknown_key_without_a_near_match_lists_the_allowed_fields(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "colour: blue\n")
    assert only_problem(desired).startswith("desired/a.yaml:5: colour: unknown field; allowed: resource_id, owner")


def test_missing_required_field(desired: Path) -> None:
    write(desired, "a.yaml", "# header\nresource_id: a\nowner: acme\ndeploy_ref: v1\n")
    assert only_problem(desired) == "desired/a.yaml:2: region: required field is missing"


@pytest.mark.parametrize(("raw", "kind"), [("1.10", "float"), ("42", "int")])
def test_unquoted_number_as_deploy_ref_tells_to_quote_it(desired: Path, raw: str, kind: str) -> None:
    write(desired, "a.yaml", f"resource_id: a\nowner: acme\nregion: eu\ndeploy_ref: {raw}\n")
    assert only_problem(desired) == (
        f'desired/a.yaml:4: deploy_ref: expected a string, got {kind} {raw}; quote it: deploy_ref: "{raw}"')


def test_quoted_number_as_deploy_ref_is_kept_as_written(desired: Path) -> None:
    write(desired, "a.yaml", 'resource_id: a\nowner: acme\nregion: eu\ndeploy_ref: "1.10"\n')
    assert load_desired(directory=desired).resources["a"].deploy_ref == "1.10"


def test_invalid_resource_id(desired: Path) -> None:
    write(desired, "a.yaml", "owner: acme\nresource_id: Acme_Prod\nregion: eu\ndeploy_ref: v1\n")
    assert only_problem(desired) == ("desired/a.yaml:2: resource_id: 'Acme_Prod' is not a valid id: "
                                     "use [a-z0-9][a-z0-9-]{0,62} (lowercase letters, digits, '-')")


@pytest.mark.parametrize("target", ["../etc", "a/b", "Local"])
def test_bad_runtime_target(desired: Path, target: str) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + f"runtime_target: {target}\n")
    assert only_problem(desired) == (f"desired/a.yaml:5: runtime_target: '{target}' is not a valid target name: "
                                     "use [a-z0-9][a-z0-9_-]{0,62}")


def test_duplicate_key_names_the_first_line(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "owner: other\n")
    assert only_problem(desired) == "desired/a.yaml:5: owner: duplicate key (first at line 2)"


def test_duplicate_key_nested_under_params(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "params:\n  size: small\n  tier: 1\n  size: big\n")
    assert only_problem(desired) == "desired/a.yaml:8: params.size: duplicate key (first at line 6)"


def test_duplicate_resource_id_across_files_names_both_places(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="x"))
    write(desired, "b/b.yaml", "# again\n" + GOOD.format(id="x"))
    assert only_problem(desired) == (
        "desired/b/b.yaml:2: resource_id: duplicate resource_id 'x' (also declared at desired/a.yaml:1)")


@pytest.mark.parametrize(("text", "line", "kind"), [
    pytest.param(GOOD.format(id="a") + "---\n- a\n- b\n", 6, "a list", id="list-after-separator"),
    pytest.param("# c\n\n- a\n", 3, "a list", id="list"),
    pytest.param("just words\n", 1, "a string", id="scalar"),
    pytest.param(GOOD.format(id="a") + "---\njust words\n", 6, "a string", id="scalar-after-separator"),
])
def test_document_that_is_not_a_mapping(desired: Path, text: str, line: int, kind: str) -> None:
    write(desired, "a.yaml", text)
    assert only_problem(desired) == f"desired/a.yaml:{line}: document is {kind}, expected a mapping of fields"


def test_invalid_yaml_syntax_names_the_line(desired: Path) -> None:
    write(desired, "a.yaml", "resource_id: a\nowner: acme\n  region: eu\ndeploy_ref: v1\n")
    assert only_problem(desired) == "desired/a.yaml:3:9: invalid YAML: mapping values are not allowed in this context"


def test_a_file_that_fails_to_parse_fails_the_whole_load(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a"))
    write(desired, "b.yaml", GOOD.format(id="b") + "---\n" + "x: [\n")
    with pytest.raises(SpecError):
        load_desired(directory=desired)


def test_python_object_tag_is_rejected(desired: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    write(desired, "a.yaml", GOOD.format(id="a") + f"params:\n  x: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    assert only_problem(desired) == (
        "desired/a.yaml:6: tag !!python/object/apply:os.system is not allowed (only plain YAML data)")
    assert not marker.exists()


def test_billion_laughs_is_rejected_quickly(desired: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    write(desired, "bomb.yaml", "\n".join(lines) + "\n")
    started = time.perf_counter()
    found = only_problem(desired)
    assert time.perf_counter() - started < 1.0
    assert found == "desired/bomb.yaml:6: aliases expand to more than 100,000 values (an alias bomb?)"


@pytest.mark.parametrize(("text", "line"), [
    ("[" * 2000 + "]" * 2000 + "\n", 1),
    ("{a: " * 2000 + "1" + "}" * 2000 + "\n", 1),
    ("".join(" " * i + "k:\n" for i in range(2000)) + " " * 2000 + "k: 1\n", 65),
], ids=["flow-sequences", "flow-mappings", "block-mappings"])
def test_deep_nesting_is_rejected_quickly(desired: Path, text: str, line: int) -> None:
    write(desired, "deep.yaml", text)
    started = time.perf_counter()
    found = only_problem(desired)
    assert time.perf_counter() - started < 1.0
    assert found == f"desired/deep.yaml:{line}: nesting deeper than 64 levels"


def test_recursive_alias_is_rejected(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "params: &p {self: *p}\n")
    assert only_problem(desired) == "desired/a.yaml:5: unknown or recursive alias *p"


def test_params_key_that_is_not_a_string(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "params:\n  size: small\n  1: one\n")
    assert only_problem(desired) == "desired/a.yaml:7: params.1: key '1' must be a string; quote it"


def test_top_level_key_that_is_not_a_string(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "yes: 1\n")
    assert only_problem(desired) == "desired/a.yaml:5: yes: key 'yes' is not read as text by YAML; quote it: \"yes\""


def test_all_problems_in_all_files_are_reported_together_sorted(desired: Path) -> None:
    write(desired, "b.yaml", GOOD.format(id="b") + "colour: red\n---\nresource_id: B\nowner: o\nregion: r\ndeploy_ref: v\n")
    write(desired, "a.yaml", "resource_id: a\nowner: acme\nregion: eu\ndeploy_ref: 7\n---\n- x\n")
    write(desired, "c/c.yaml", "x: [\n")
    write(desired, "ok.yaml", GOOD.format(id="ok"))
    found = problems(desired)
    assert [p.split(": ", 1)[0] for p in found] == [
        "desired/a.yaml:4", "desired/a.yaml:6", "desired/b.yaml:5", "desired/b.yaml:7", "desired/c/c.yaml:1:5"]
    assert "deploy_ref" in found[0] and "colour" in found[2] and "'B'" in found[3]


# --- what valid YAML means ------------------------------------------------------------------------


def test_merge_keys_fill_in_defaults_and_explicit_keys_win(desired: Path) -> None:
    write(desired, "a.yaml", "<<: &defaults\n  owner: acme\n  region: eu-west-1\n  deploy_ref: v1\n"
          "resource_id: a\nregion: us-east-1\nparams:\n  <<: [{size: small, tier: 1}, {tier: 2, zone: b}]\n"
          "  size: big\n")
    spec = load_desired(directory=desired).resources["a"]
    assert (spec.owner, spec.region, spec.deploy_ref) == ("acme", "us-east-1", "v1")
    assert spec.params == {"size": "big", "tier": 1, "zone": "b"}


def test_anchors_within_limits_work(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "params:\n  base: &b {cpu: 2, tags: [x, y]}\n"
          "  copies: [*b, *b, *b]\n")
    params = load_desired(directory=desired).resources["a"].params
    assert params["copies"] == [{"cpu": 2, "tags": ["x", "y"]}] * 3


def test_dates_stay_strings(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "params: {since: 2024-01-31, at: 2001-12-14t21:59:43.10-05:00}\n")
    assert load_desired(directory=desired).resources["a"].params == {
        "at": "2001-12-14t21:59:43.10-05:00", "since": "2024-01-31"}


def test_params_key_order_does_not_change_spec_hash(desired: Path) -> None:
    write(desired, "a.yaml", GOOD.format(id="a") + "params: {b: 1, a: {y: 2, x: 1}}\n")
    write(desired, "b.yaml", GOOD.format(id="b") + "params: {a: {x: 1, y: 2}, b: 1}\n")
    state = load_desired(directory=desired)
    first, second = state.resources["a"], state.resources["b"].model_copy(update={"resource_id": "a"})
    assert spec_hash(first) == spec_hash(second)
    assert spec_hash(first) != spec_hash(first.model_copy(update={"params": {"a": {"x": 1, "y": 3}, "b": 1}}))


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_params_are_refused_since_json_cannot_carry_them(desired: Path, value: str) -> None:
    # pydantic's JSON (hashing, the parallel loader, the scripts' RESOURCE_PARAMS) would write null
    write(desired, "a.yaml", GOOD.format(id="a") + f"params: {{limits: [1, {value}]}}\n")
    problem = only_problem(desired)
    assert problem.startswith("desired/a.yaml:5: params: params.limits[1] is ") and "quote it" in problem


# --- the parallel path ----------------------------------------------------------------------------


def _big_tree(directory: Path, *, files: int = 10, per_file: int = 220) -> None:
    """`files` files of `per_file` resources with ~2 KiB of params each: over 4 MiB in total."""
    filler = "x" * 1900
    for f in range(files):
        docs = [
            f"resource_id: r-{f}-{i}\nowner: team-{i % 7}\nregion: eu-{i % 3}\ndeploy_ref: v{i}.{f}\n"
            f"params: {{note: {filler}, n: {i}, nested: {{b: [1, 2.5, true, null], a: '{i:04d}'}}}}\n"
            for i in range(per_file)
        ]
        write(directory, f"part{f:02d}/fleet.yaml", "---\n".join(docs))


def test_parallel_load_equals_serial_load(desired: Path) -> None:
    _big_tree(desired)
    paths = desired_files(desired)
    assert len(paths) >= 8 and sum(p.stat().st_size for p in paths) >= 4 * 1024 * 1024
    serial_problems: list = []
    parallel_problems: list = []
    serial = _load_serial(paths=paths, problems=serial_problems)
    parallel = _load_parallel(paths=paths, problems=parallel_problems)
    assert serial_problems == parallel_problems == []
    assert [name for name, _ in parallel] == [name for name, _ in serial]
    as_specs = lambda loaded: {s.resource_id: (s, str(src)) for _, items in loaded for s, src in items}  # noqa: E731
    assert as_specs(parallel) == as_specs(serial)
    state = load_desired(directory=desired)  # whichever path it takes, the same answer
    assert {k: spec_hash(v) for k, v in state.resources.items()} == {
        k: spec_hash(v) for k, (v, _) in as_specs(serial).items()}
    assert len(state.resources) == 10 * 220


def test_parallel_load_reports_a_bad_file_with_its_line(desired: Path) -> None:
    _big_tree(desired)
    write(desired, "part00/a-bad.yaml", GOOD.format(id="bad-a") + "regoin: eu\n")
    write(desired, "part00/b-bad.yaml", "# c\n" + GOOD.format(id="bad-b") + "---\nx: [\n")
    paths = desired_files(desired)
    # the first file is this process's share, the second a forked worker's
    assert paths[:2] == [desired / "part00/a-bad.yaml", desired / "part00/b-bad.yaml"]
    found_parallel: list = []
    _load_parallel(paths=paths, problems=found_parallel)
    expected = ["desired/part00/a-bad.yaml:5: regoin: unknown field (did you mean 'region'?)",
                "desired/part00/b-bad.yaml:7:5: invalid YAML: did not find expected node content"]
    assert sorted(str(p) for p in found_parallel) == expected
    assert problems(desired) == expected
    assert os.cpu_count() and os.cpu_count() > 1, "the parallel path needs more than one core"
