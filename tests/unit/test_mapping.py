"""The mapping table: the example file, lookups, templates and every refusal."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from app.changes import SOURCE_USER_FIELDS, GroupRef, UserRef
from app.errors import ConfigError
from app.mapping import COR_SOURCES, Mapping, load_mapping, parse_mapping

EXAMPLE = Path(__file__).resolve().parents[2] / "mapping.yaml"

ENG_ONCALL = "00g8mo0l5wuTxmoIC0h7"
PLATFORM = "00gplatform000000000"
GRAPH_GROUP = "0bc7d487-fd6f-41a0-8362-71ec81074f11"


def parse(text: str, **kwargs: str) -> Mapping:
    return parse_mapping(dedent(text), path="m.yaml", **kwargs)


def refused(text: str, **kwargs: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, **kwargs)
    return info.value


@pytest.fixture
def example() -> Mapping:
    return load_mapping(EXAMPLE)


# --- the example file ---------------------------------------------------------------------


def test_example_loads_with_its_providers_and_rules(example: Mapping) -> None:
    assert example.path == str(EXAMPLE)
    assert example.cor_source("okta") == "OKTA"
    assert example.cor_source("entra") == "MICROSOFT_DYNAMICS"
    assert example.providers["entra"].user_id == "{login}"
    assert len(example.rules) == 7
    assert all(rule.line > 1 for rule in example.rules)


def test_example_templates_fit_every_source(example: Mapping) -> None:
    every = SOURCE_USER_FIELDS["okta_hook"] & SOURCE_USER_FIELDS["graph"]
    example.check_templates({"okta": every, "entra": every})


def test_example_matches_the_fixtures(example: Mapping) -> None:
    assert example.workspaces_for("okta", GroupRef(id=ENG_ONCALL, name="eng-oncall")) == (
        "WS-ENG",
        "WS-ONCALL",
    )
    assert example.workspaces_for("okta", GroupRef(id="00g9fin0l5wuTxmoIC0h")) == ("WS-FIN",)
    assert example.workspaces_for("entra", GroupRef(id=GRAPH_GROUP)) == ("WS-ENG", "WS-ONCALL")
    scim_finance = GroupRef(id="8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", name="Finance")
    assert example.workspaces_for("entra", scim_finance) == ("WS-FIN",)
    assert example.workspaces_for("entra", GroupRef(id="x", name="Engineering")) == ("WS-ENG",)


def test_describe_shows_providers_rules_and_who_grants_what(example: Mapping) -> None:
    text = example.describe()
    assert "okta   cor_source OKTA" in text
    assert "entra  cor_source MICROSOFT_DYNAMICS" in text
    assert f"okta group {ENG_ONCALL}" in text
    assert "entra group 'Finance'" in text
    assert "-> WS-ENG, WS-ONCALL" in text
    granted = f"WS-ENG <- okta group {ENG_ONCALL}; okta group 'eng-oncall'; okta group {PLATFORM}"
    assert granted in text


# --- lookups ------------------------------------------------------------------------------

TABLE = """\
    groups:
      - provider: okta
        group_id: g1
        workspaces: [WS-A, WS-B, WS-A]
      - provider: okta
        group_name: Eng
        workspaces: [WS-B, WS-C]
      - provider: okta
        group_id: g2
        workspaces: [WS-A]
      - provider: entra
        group_id: g1
        workspaces: [WS-Z]
    """


def test_lookup_by_id_is_per_provider() -> None:
    table = parse(TABLE)
    assert table.workspaces_for("okta", GroupRef(id="g1")) == ("WS-A", "WS-B")
    assert table.workspaces_for("entra", GroupRef(id="g1")) == ("WS-Z",)
    assert table.rules_for("okta", GroupRef(id="nope")) == []


def test_lookup_by_name_is_exact_but_trimmed() -> None:
    table = parse(TABLE)
    assert table.workspaces_for("okta", GroupRef(id="x", name="  Eng ")) == ("WS-B", "WS-C")
    assert table.workspaces_for("okta", GroupRef(id="x", name="eng")) == ()
    assert table.workspaces_for("entra", GroupRef(id="x", name="Eng")) == ()


def test_id_and_name_rules_union_in_file_order_without_duplicates() -> None:
    table = parse(TABLE)
    group = GroupRef(id="g1", name="Eng")
    assert [rule.line for rule in table.rules_for("okta", group)] == [2, 5]
    assert table.workspaces_for("okta", group) == ("WS-A", "WS-B", "WS-C")


def test_a_workspace_granted_by_several_groups() -> None:
    table = parse(TABLE)
    granting = [rule.label() for rule in table.rules if "WS-A" in rule.workspaces]
    assert granting == ["okta group g1", "okta group g2"]


def test_rule_cleans_workspaces_and_labels_itself() -> None:
    rule = parse(TABLE).rules[0]
    assert rule.workspaces == ("WS-A", "WS-B")
    assert rule.label() == "okta group g1"
    assert parse(TABLE).rules[1].label() == "okta group 'Eng'"


def test_ids_stay_as_written() -> None:
    # Plain YAML would read 0123 as 83, 1e5 as 100000.0 and yes as True.
    table = parse(
        """\
        groups:
          - {provider: okta, group_id: 0123, workspaces: [1e5, 42]}
          - {provider: okta, group_name: yes, workspaces: [WS-Y]}
        """
    )
    assert table.rules[0].group_id == "0123"
    assert table.rules[0].workspaces == ("1e5", "42")
    assert table.rules[1].group_name == "yes"


def test_anchors_and_merge_keys_work() -> None:
    table = parse(
        """\
        groups:
          - &eng {provider: okta, group_id: g1, workspaces: [WS-ENG]}
          - <<: *eng
            group_id: g2
        """
    )
    assert [rule.group_id for rule in table.rules] == ["g1", "g2"]
    assert table.rules[1].workspaces == ("WS-ENG",)


def test_empty_groups_is_an_empty_table() -> None:
    table = parse("groups:\n")
    assert table.rules == ()
    assert "(none" in table.describe()


# --- user ids and sources -----------------------------------------------------------------

WITH_PROVIDERS = """\
    providers:
      okta:
        cor_source: SAP
        user_id: "okta-{id}/{login}"
      entra:
        cor_source: MICROSOFT_DYNAMICS
        user_id: "{externalId}"
    groups: []
    """


def test_cor_user_id_renders_the_template() -> None:
    table = parse(WITH_PROVIDERS)
    user = UserRef(id="00u1", login="jane@acme.example", externalId="jane")
    assert table.cor_user_id("okta", user) == "okta-00u1/jane@acme.example"
    assert table.cor_user_id("entra", user) == "jane"
    assert table.cor_source("okta") == "SAP"


def test_cor_user_id_names_template_and_missing_field() -> None:
    table = parse(WITH_PROVIDERS)
    with pytest.raises(ConfigError) as info:
        table.cor_user_id("entra", UserRef(id="u1", login="jane@acme.example", externalId=""))
    err = info.value
    assert (err.file, err.line) == ("m.yaml", 7)
    assert "'{externalId}'" in err.reason and "needs {externalId}" in err.reason
    assert "it has: id, login" in err.reason


@pytest.mark.parametrize("login", [".", ".."])
def test_a_cor_user_id_that_is_a_dot_segment_is_refused(login: str) -> None:
    table = parse(WITH_PROVIDERS)
    with pytest.raises(ConfigError) as info:
        table.cor_user_id("entra", UserRef(id="u1", login="x", externalId=login))
    assert f"{login!r} is not a usable identifier" in info.value.reason
    assert "'{externalId}' for entra" in info.value.reason
    # Around other text a dot is only a dot.
    assert table.cor_user_id("okta", UserRef(id="00u1", login="..")) == "okta-00u1/.."


def test_provider_without_entry_gets_defaults() -> None:
    table = parse(
        """\
        groups:
          - {provider: entra, group_id: g, workspaces: [W]}
        """,
        default_source="GITHUB",
    )
    assert table.providers["entra"].cor_source == "GITHUB"
    assert table.providers["entra"].user_id == "{login}"
    assert "okta" not in table.providers
    assert table.cor_source("okta") == "GITHUB"
    assert table.cor_user_id("okta", UserRef(id="u", login="bob")) == "bob"
    assert "(default)" in table.describe()


def test_check_templates_refuses_fields_a_source_cannot_fill() -> None:
    table = parse(WITH_PROVIDERS)
    table.check_templates({"entra": SOURCE_USER_FIELDS["scim"]})
    with pytest.raises(ConfigError) as info:
        table.check_templates({"entra": SOURCE_USER_FIELDS["scim"] & SOURCE_USER_FIELDS["graph"]})
    assert info.value.line == 7
    assert "uses externalId" in info.value.reason
    assert "only fill: email, id, login" in info.value.reason


def test_bad_default_source_is_refused() -> None:
    err = refused("groups: []\n", default_source="NOPE")
    assert "COR_SOURCE 'NOPE'" in str(err)


# --- refusals, each with its line ---------------------------------------------------------

RULE = "groups:\n  - provider: okta\n"

REFUSALS = [
    ("top level list", "- a\n- b\n", 1, ["top level must be a mapping"]),
    ("top level scalar", "hello\n", 1, ["top level must be a mapping"]),
    ("unknown top key", "groups: []\nmappings: {}\n", 2, ["unknown key 'mappings'", "providers"]),
    (
        "unknown rule key",
        RULE + "    group_id: g\n    workspace: [W]\n",
        4,
        ["unknown key 'workspace'", "did you mean 'workspaces'"],
    ),
    (
        "unknown provider key",
        "providers:\n  okta:\n    cor_source: OKTA\n    user_id: '{login}'\n    source: X\n",
        5,
        ["unknown key 'source' in provider 'okta'"],
    ),
    (
        "unknown provider in providers",
        "providers:\n  onelogin: {cor_source: OKTA, user_id: '{login}'}\n",
        2,
        ["unknown provider 'onelogin'", "okta or entra"],
    ),
    (
        "unknown provider in a rule",
        "groups:\n  - provider: onelogin\n    group_id: g\n    workspaces: [W]\n",
        2,
        ["unknown provider 'onelogin'"],
    ),
    ("missing workspaces", RULE + "    group_id: g\n", 2, ["missing key 'workspaces'"]),
    ("empty workspaces", RULE + "    group_id: g\n    workspaces: []\n", 4, ["at least one"]),
    ("workspaces a scalar", RULE + "    group_id: g\n    workspaces: W\n", 4, ["expected a list"]),
    (
        "blank workspace",
        RULE + "    group_id: g\n    workspaces:\n      - W\n      - '  '\n",
        6,
        ["must not be blank"],
    ),
    ("neither id nor name", RULE + "    workspaces: [W]\n", 2, ["exactly one", "neither"]),
    (
        "both id and name",
        RULE + "    group_id: g\n    group_name: G\n    workspaces: [W]\n",
        2,
        ["exactly one of group_id or group_name", "both"],
    ),
    ("blank group id", RULE + "    group_id: '  '\n    workspaces: [W]\n", 3, ["group_id"]),
    ("group id a list", RULE + "    group_id: [a]\n    workspaces: [W]\n", 3, ["expected text"]),
    ("rule not a mapping", "groups:\n  - okta\n", 2, ["group rule: expected a mapping"]),
    ("groups a mapping", "groups:\n  okta: x\n", 1, ["groups: expected a list"]),
    (
        "unknown cor_source",
        "providers:\n  okta:\n    cor_source: OKTTA\n    user_id: '{login}'\n",
        3,
        ["unknown 'OKTTA'", "MICROSOFT_DYNAMICS", "GLOBANT"],
    ),
    (
        "missing user_id",
        "providers:\n  okta:\n    cor_source: OKTA\n",
        2,
        ["missing key 'user_id'"],
    ),
    ("template syntax", "providers:\n  okta: {cor_source: OKTA, user_id: '{login'}\n", 2, ["bad"]),
    (
        "template unknown field",
        "providers:\n  okta:\n    cor_source: OKTA\n    user_id: '{mail}'\n",
        4,
        ["unknown field {mail}", "allowed: email, externalId, id, login, userName"],
    ),
    (
        "template attribute access",
        "providers:\n  okta:\n    cor_source: OKTA\n    user_id: '{login.upper}'\n",
        4,
        ["unknown field {login.upper}"],
    ),
    (
        "template conversion",
        "providers:\n  okta:\n    cor_source: OKTA\n    user_id: '{login!r}'\n",
        4,
        ["no format spec"],
    ),
    (
        "template format spec",
        "providers:\n  okta:\n    cor_source: OKTA\n    user_id: '{login:>9}'\n",
        4,
        ["no format spec"],
    ),
    (
        "template without a field",
        "providers:\n  okta:\n    cor_source: OKTA\n    user_id: admin\n",
        4,
        ["names no field"],
    ),
    (
        "same group twice",
        "groups:\n"
        "  - {provider: okta, group_id: g, workspaces: [A]}\n"
        "  - {provider: entra, group_id: g, workspaces: [B]}\n"
        "  - {provider: okta, group_id: g, workspaces: [C]}\n",
        4,
        ["okta group g is listed twice", "first at line 2"],
    ),
    (
        "same name twice",
        "groups:\n"
        "  - {provider: entra, group_name: Finance, workspaces: [A]}\n"
        "  - {provider: entra, group_name: ' Finance', workspaces: [B]}\n",
        3,
        ["entra group 'Finance' is listed twice", "first at line 2"],
    ),
    (
        "duplicate yaml key",
        "groups:\n  - provider: okta\n    group_id: a\n    group_id: b\n    workspaces: [W]\n",
        4,
        ["'group_id' is given twice", "first at line 3"],
    ),
    ("syntax error", "groups:\n  - provider: okta\n   group_id: [\n", 3, ["invalid YAML"]),
    ("unclosed flow", "groups: [\n  {provider: okta\n", 3, ["invalid YAML"]),
    ("two documents", "groups: []\n---\ngroups: []\n", 2, ["invalid YAML", "single document"]),
    ("python tag", "groups: !!python/object:os.system []\n", 1, ["invalid YAML", "constructor"]),
]


@pytest.mark.parametrize(
    ("text", "line", "needles"),
    [pytest.param(text, line, needles, id=name) for name, text, line, needles in REFUSALS],
)
def test_refusals_name_file_line_and_reason(text: str, line: int, needles: list[str]) -> None:
    err = refused(text)
    assert (err.file, err.line) == ("m.yaml", line), str(err)
    assert str(err).startswith(f"m.yaml:{line}: ")
    for needle in needles:
        assert needle in err.reason, str(err)


def test_every_problem_is_reported_first_by_line() -> None:
    err = refused(
        """\
        groups:
          - provider: onelogin
            group_id: g
            workspaces: [W]
          - provider: okta
            group_id: h
            workspaces: []
        """
    )
    assert err.line == 2
    assert "unknown provider 'onelogin'" in err.reason
    assert "\n  also line 7: workspaces: list at least one workspace" in err.reason


def test_empty_file_is_refused() -> None:
    err = refused("# nothing here\n")
    assert err.file == "m.yaml" and "empty" in err.reason


def test_cor_sources_are_the_documented_ones() -> None:
    assert {"OKTA", "MICROSOFT_DYNAMICS", "GLOBANT"} <= COR_SOURCES
    assert len(COR_SOURCES) == 12


# --- files --------------------------------------------------------------------------------


def test_load_accepts_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text("\ufeffgroups:\n  - {provider: okta, group_id: g, workspaces: [W]}\n")
    table = load_mapping(path)
    assert table.path == str(path)
    assert table.rules[0].line == 2


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_mapping(path)
    assert info.value.file == str(path)
    assert str(info.value).startswith(f"{path}: ")


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory fails to read for any user, root included.
    with pytest.raises(ConfigError, match="cannot read the mapping file") as info:
        load_mapping(tmp_path)
    assert info.value.file == str(tmp_path)


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"groups:\n  - provider: okta\n    group_name: Caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_mapping(path)
    assert info.value.line == 3


def test_file_errors_carry_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("groups:\n  - provider: okta\n    group_id: g\n")
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert str(info.value).startswith(f"{path}:2: ")
