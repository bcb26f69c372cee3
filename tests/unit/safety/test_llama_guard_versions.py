"""--llama-guard-version: parsed once, wired to the classifier, and checked against the policy
(a policy the release cannot judge stops the service with exit code 2 and says what to pass)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.safety.classifiers.factory import build_classifier
from services.safety.classifiers.llama_guard import LlamaGuardClassifier
from services.safety.classifiers.llama_guard3_prompt import CATEGORIES as V3_CATEGORIES
from services.safety.classifiers.llama_guard_format import check_policy
from services.safety.config import build_parser, config_from_args
from services.safety.policy import POLICIES_DIR, PolicyError, load_policy
from tests.support.processes import ROOT
from tests.unit.safety.tiny_models import build_tiny_s_guard

LG1, LG2, MLC = (
    load_policy(POLICIES_DIR / f) for f in ("llama_guard.yaml", "llama_guard2.yaml", "mlcommons.yaml")
)
COMPONENT = ROOT / "deploy" / "k8s" / "components" / "llama-guard"


@pytest.mark.parametrize(("version", "policy"), [(1, LG1), (1, MLC), (1, LG2), (2, LG2), (3, MLC)])
def test_policies_written_for_a_release_fit_it(version: int, policy: object) -> None:
    check_policy(version, policy)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("version", "policy", "problem", "fix"),
    [
        (2, LG1, "O1 (Violence and Hate) is not one of its categories", "llama_guard2.yaml"),
        (3, LG1, "O6 (Self-Harm) is not one of its categories", "mlcommons.yaml"),
        (2, MLC, "S10 is 'Hate' there but 'Self-Harm' in Llama Guard 2", "llama_guard2.yaml"),
        (3, LG2, "S5 is 'Specialized Advice' there but 'Defamation' in Llama Guard 3", "mlcommons.yaml"),
    ],
)
def test_a_policy_of_another_taxonomy_is_refused(
    version: int, policy: object, problem: str, fix: str
) -> None:
    with pytest.raises(PolicyError) as error:
        check_policy(version, policy)  # type: ignore[arg-type]
    message = str(error.value)
    assert f"does not fit --llama-guard-version {version}" in message
    assert problem in message and f"--policy services/safety/policies/{fix}" in message


def test_the_version_defaults_to_1_and_belongs_to_llama_guard(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--classifier", "llama-guard", "--model-dir", "/m"]
    assert config_from_args(build_parser().parse_args(base)).llama_guard_version == 1
    assert (
        config_from_args(build_parser().parse_args([*base, "--llama-guard-version", "3"])).llama_guard_version
        == 3
    )
    with pytest.raises(SystemExit, match="applies to --classifier llama-guard only"):
        config_from_args(build_parser().parse_args(["--llama-guard-version", "3"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--llama-guard-version", "4"])
    assert "invalid choice: 4" in capsys.readouterr().err


def test_the_factory_builds_the_release_the_flag_names(tmp_path: Path) -> None:
    model = build_tiny_s_guard(tmp_path, ["\n\n", "safe"], trigger="<|end_header_id|>")
    flags = ["--classifier", "llama-guard", "--model-dir", str(model), "--llama-guard-version", "3"]
    config = config_from_args(
        build_parser().parse_args([*flags, "--policy", str(POLICIES_DIR / "mlcommons.yaml")])
    )
    classifier = build_classifier(config, MLC)
    assert isinstance(classifier, LlamaGuardClassifier) and classifier.format.version == 3


def test_the_kubernetes_component_runs_llama_guard_3_with_a_policy_it_can_judge() -> None:
    [patch] = yaml.safe_load_all((COMPONENT / "safety-gpu.yaml").read_text())
    [container] = patch["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert {"--classifier=llama-guard", "--llama-guard-version=3"} <= set(args)
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    assert generator["name"] == "llamagate-safety-policy" and generator["behavior"] == "replace"
    [source] = generator["files"]
    assert source.split("=") == ["policy.yaml", "policy.yaml"]
    policy = load_policy(COMPONENT / "policy.yaml")
    check_policy(3, policy)
    # Every category on: the prompt is then the 8B checkpoint's own chat template, verbatim.
    assert [c.code for c in policy.enabled] == list(V3_CATEGORIES)
