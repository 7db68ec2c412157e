"""pyproject.toml declares what the package imports: every third-party module rl_reason
imports at module level comes from a runtime dependency, every one it imports inside a
function from a runtime dependency or an extra; the GPU extra matches the jax pin.
(What a dependency needs without declaring it, as transformers' chat templates need
jinja2, only a run shows: .ci/run's no-extras smoke.)"""

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def project():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def names(requirements):
    """Normalised distribution names ('jax[cuda12]==0.10.2' -> 'jax')."""
    return {re.split(r"[\[=<>~! ;]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def third_party_imports():
    """{top-level module: imported at module level anywhere in rl_reason?}"""
    found: dict[str, bool] = {}
    for path in (ROOT / "rl_reason").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("rl_reason", "__future__"):
                    continue
                found[top] = found.get(top, False) or id(node) in top_level
    return found


def test_every_import_comes_from_a_declared_distribution():
    p = project()
    runtime = names(p["dependencies"])
    extras = {name: names(reqs) for name, reqs in p["optional-dependencies"].items()}
    everything = runtime.union(*extras.values())
    providers = importlib.metadata.packages_distributions()
    imports = third_party_imports()
    assert {"jax", "transformers", "orbax", "etils", "ml_dtypes"} <= set(imports)
    for module, at_module_level in sorted(imports.items()):
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert distributions, f"{module}: not installed here, so not checkable"
        allowed = runtime if at_module_level else everything
        where, missing = (("at module level", "in no runtime dependency") if at_module_level
                          else ("in a function", "nowhere"))
        assert distributions & allowed, (f"rl_reason imports {module} ({sorted(distributions)}) "
                                         f"{where}, but pyproject.toml declares it {missing}")


def test_extras_keep_torch_out_of_dev_and_match_the_jax_pin():
    p = project()
    extras = p["optional-dependencies"]
    assert "torch" not in names(extras["dev"]) and names(extras["parity"]) == {"torch"}
    assert {"wandb", "pytest"} <= names(extras["dev"])
    jax_pin = next(r for r in p["dependencies"] if r.startswith("jax=="))
    version = jax_pin.split("==")[1]
    assert f"jaxlib=={version}" in p["dependencies"]
    assert sorted(extras["gpu"]) == sorted([
        f"jax[cuda12]=={version}", f"jax-cuda12-plugin[with-cuda]=={version}",
        f"jax-cuda12-pjrt=={version}"])
    assert "jinja2==3.1.6" in p["dependencies"]     # transformers' chat templates


def test_ci_smokes_the_no_extras_install_and_ends_with_the_readme_test_commands():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-2:] == ["python -m pytest -q", "python -m pytest -q -m slow"]
    readme = (ROOT / "README.md").read_text()
    for command in ci[-2:]:
        assert f"    {command} " in readme
    text = "\n".join(ci)
    assert '-m pip install -q -e .\n' in text          # the smoke: no extras
    assert "rl_reason.main --config=configs/grpo.py:tiny" in text
