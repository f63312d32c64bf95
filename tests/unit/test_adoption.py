"""Checking an adoption file: every kind of bad row is named with FILE:LINE, and one bad row adopts nothing."""

from __future__ import annotations

import json

from reconciler.adoption import AdoptRow, check_rows, read_file
from reconciler.models import ResourceSpec, spec_hash


def spec(resource_id: str, **fields) -> ResourceSpec:
    return ResourceSpec(**{"resource_id": resource_id, "owner": "acme", "region": "eu", "deploy_ref": "v1",
                           "params": {"size": "s"}, **fields})


DESIRED = {rid: spec(rid) for rid in ("a", "b", "c", "d", "e", "f", "g")}


def check(text: str, managed=frozenset({"b"})):
    rows, problems = read_file(text=text, name="fleet.csv")
    checked = check_rows(rows=rows, desired=DESIRED, managed=managed, name="fleet.csv")
    return checked, problems


def test_a_good_csv_adopts_every_row_from_the_declared_spec() -> None:
    checked, problems = check("resource_id,url,created_at,owner,params,protected\n"
                              "a,http://10.0.0.1:8080/x,2020-01-01T00:00:00Z,acme,\"{\"\"size\"\": \"\"s\"\"}\",false\n"
                              "\n"
                              "c,https://c.example/,,,,\n")
    assert (problems, checked.problems) == ([], [])
    first, second = checked.adoptions
    assert (first.resource_id, first.url, first.created_at, first.spec_hash) == (
        "a", "http://10.0.0.1:8080/x", "2020-01-01T00:00:00.000000Z", spec_hash(spec("a")))
    assert (second.resource_id, second.created_at, second.spec) == ("c", None, spec("c").model_dump())


def test_every_bad_row_is_listed_with_its_line_and_nothing_is_adopted() -> None:
    checked, _ = check("resource_id,url,deploy_ref,created_at\n"
                       "a,http://a/,v1,\n"            # 2: good
                       "zz,http://z/,v1,\n"           # 3: not declared
                       "b,http://b/,v1,\n"            # 4: already managed
                       "c,http://c/,v2,\n"            # 5: a spec field differs
                       "d,ftp://d/,v1,\n"             # 6: not an http(s) URL
                       "e,http://e/\x1b[31m,v1,\n"    # 7: control characters
                       "a,http://a2/,v1,\n"           # 8: twice
                       "f,,v1,\n"                     # 9: no url
                       "g,http://g/,v1,yesterday\n")  # 10: a bad timestamp
    assert checked.adoptions == []
    assert [problem.split(": ")[0] for problem in checked.problems] == [f"fleet.csv:{n}" for n in range(3, 11)]
    text = "\n".join(checked.problems)
    for expected in ("zz: not declared", "b: already managed", 'deploy_ref is "v2" here but "v1" in desired/',
                     "url is not an http(s):// URL", "url holds control characters: http://e/\\x1b[31m",
                     "a: also on line 2", "f: url is missing", "not an ISO-8601 timestamp"):
        assert expected in text, (expected, text)
    assert "\x1b" not in text


def test_a_tombstone_or_forgotten_id_is_not_managed_and_may_be_adopted() -> None:
    checked, _ = check("resource_id,url\nb,http://b/\n", managed=frozenset())
    assert [a.resource_id for a in checked.adoptions] == ["b"]


def test_json_lines_with_typed_fields_and_their_problems() -> None:
    text = "\n".join([json.dumps({"resource_id": "a", "url": "http://a/", "params": {"size": "s"}, "protected": False}),
                      json.dumps({"resource_id": "c", "url": "http://c/", "params": {"size": "XL"}}),
                      "{not json",
                      json.dumps({"resource_id": "d", "url": "http://d/", "colour": "red"})])
    rows, problems = read_file(text=text, name="fleet.jsonl")
    checked = check_rows(rows=rows, desired=DESIRED, managed=(), name="fleet.jsonl")
    assert problems[0].startswith("fleet.jsonl:3: not a JSON object")
    assert problems[1].startswith("fleet.jsonl:4: unknown field colour")
    assert checked.problems == ['fleet.jsonl:2: c: params is {"size": "XL"} here but {"size": "s"} in desired/']


def test_a_csv_header_with_an_unknown_or_missing_column_is_refused_at_its_line() -> None:
    _, problems = read_file(text="\nresource_id,colour\na,red\n", name="f.csv")
    assert problems == ["f.csv:2: header: unknown column colour; missing column url; columns are "
                        "created_at, deploy_ref, owner, params, protected, region, resource_id, runtime_target, url"]


def test_one_id_from_the_command_line_has_no_line() -> None:
    checked = check_rows(rows=[AdoptRow(0, {"resource_id": "b", "url": "http://b/"})], desired=DESIRED,
                         managed={"b"}, name="")
    assert checked.problems == ["b: already managed (only new ids, tombstones and forgotten rows can be adopted)"]
