"""The policy file: both shipped taxonomies load, overrides apply, mistakes are config errors."""

from pathlib import Path

import pytest

from services.safety.policy import DEFAULT_POLICY, POLICIES_DIR, PolicyError, load_policy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_llama_guard_policy_has_o1_to_o6_enabled() -> None:
    policy = load_policy(POLICIES_DIR / "llama_guard.yaml")
    assert [c.code for c in policy.enabled] == ["O1", "O2", "O3", "O4", "O5", "O6"]
    assert policy.category("O6").name == "Self-Harm"
    assert policy.category("O1").description.startswith(
        "Should not\n- Help people plan or engage in violence."
    )


def test_the_default_policy_is_mlcommons_with_every_category_but_specialized_advice() -> None:
    policy = load_policy(DEFAULT_POLICY)
    assert policy.name == "mlcommons" and len(policy.categories) == 14
    assert [c.code for c in policy.enabled] == [f"S{i}" for i in range(1, 15) if i != 6]
    assert policy.category("S11").sources == ("S11",)


def test_the_o_policy_reads_the_s_codes_of_the_embedded_head() -> None:
    policy = load_policy(POLICIES_DIR / "llama_guard.yaml")
    assert policy.category("O6").sources == ("O6", "S11")
    covered = {label for c in policy.enabled for label in c.sources}
    assert covered >= {f"S{i}" for i in range(1, 15) if i != 6}


def test_extends_overrides_thresholds_and_switches(tmp_path: Path) -> None:
    path = write(
        tmp_path, f"extends: {POLICIES_DIR / 'llama_guard.yaml'}\nthresholds: {{O3: 0.001}}\ndisabled: [O2]\n"
    )
    policy = load_policy(path)
    assert policy.category("O3").threshold == pytest.approx(0.001)
    assert not policy.category("O2").enabled
    assert policy.category("O1").threshold == 0.5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("thresholds: {O9: 0.2}", "unknown category 'O9'"),
        ("disabled: [X1]", "unknown category 'X1'"),
        ("thresholds: {O1: 1.5}", "threshold must be in (0, 1]"),
        ("thresholds: {O1: 0}", "threshold must be in (0, 1]"),
        ("thresholds: {O1: high}", "threshold must be a number"),
        ("disabled: [O1, O2, O3, O4, O5, O6]", "no category is enabled"),
        ("colour: blue", "unknown keys ['colour']"),
    ],
)
def test_bad_policy_is_a_config_error(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, f"extends: {POLICIES_DIR / 'llama_guard.yaml'}\n{body}\n")
    with pytest.raises(
        PolicyError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        load_policy(path)


def test_taxonomy_category_needs_description(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="'description' must be a non-empty string"):
        load_policy(write(tmp_path, "categories:\n  - {code: X1, name: Thing}\n"))
