"""The documentation site builds with ``mkdocs build --strict``, and says what the code says.

The build describes every registered model (it builds each one to count params and MACs),
about a minute on two cores; the result is cached under ``build/docs-cache`` by a hash of
the ``zoo`` package (see ``docs/gen_catalogue.py``), so only the first build pays for it.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest

import zoo
from zoo.models import get_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``mkdocs build --strict``, run in this process: the catalogue's model descriptions
    (``zoo.describe``, measured once per process) are then shared with the registry tests."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    out = tmp_path_factory.mktemp("site")
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    # strict: any warning (a broken link, a missing page) aborts the build.
    build(load_config(str(REPO / "mkdocs.yml"), site_dir=str(out), strict=True))
    return out


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


def text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_catalogue_lists_every_registered_model(site):
    catalogue = page(site, "catalogue")
    names = zoo.list_models()
    assert len(names) >= 25
    for name in names:
        spec = get_spec(name)
        assert f'id="{name}"' in catalogue, f"{name} has no section"
        assert f'href="#{name}"' in catalogue, f"{name} is not in the summary table"
        section = text(catalogue.split(f'id="{name}"', 1)[1].split("<h3", 1)[0])
        assert str(spec.year) in section and spec.paper.split(",")[0] in section
        for twin in spec.twins.values():
            assert twin in section, (name, twin)
        for tag, weights in spec.weights.items():
            assert f"{tag}" in section, (name, tag)
            if weights.top1 is not None:
                assert f"{weights.top1}" in section, (name, tag, weights.top1)


@pytest.mark.parametrize("name", ["lenet5", "resnet18"])
def test_catalogue_figures_are_describe_s(site, name):
    info = zoo.describe(name)
    section = text(page(site, "catalogue").split(f'id="{name}"', 1)[1].split("<h3", 1)[0])
    assert f"{info['params']:,}" in section and f"{info['keras_params']:,}" in section
    assert "×".join(map(str, info["input_size"])) in section


def test_every_page_and_the_api_reference_are_built(site):
    for name in ("quickstart", "finetuning", "pipelines", "weights", "distributed", "export",
                 "examples", "benchmarks", "api/zoo", "api/pipelines", "api/weights",
                 "api/export"):
        assert (site / name / "index.html").is_file(), name
    api = page(site, "api/zoo")
    for function in ("zoo.models.build", "zoo.recipes.finetune.finetune",
                     "zoo.distribute.select_strategy"):
        assert f'id="{function}"' in api, function
    # Sphinx roles in docstrings are shown as plain code, not as ":func:".
    assert ":func:" not in page(site, "api/pipelines")


def test_examples_page_shows_each_script_s_current_source(site):
    examples = text(page(site, "examples"))
    for script in sorted((REPO / "examples").glob("*.py")):
        if script.stem == "tiny_data":
            continue
        assert f"examples/{script.name}" in examples
        for line in script.read_text().splitlines():
            assert line.strip() in examples, (script.name, line)


def test_benchmarks_page_is_benchmarks_md(site):
    benchmarks = text(page(site, "benchmarks"))
    source = REPO / "BENCHMARKS.md"
    if not source.is_file():
        assert "BENCHMARKS.md is not in this checkout" in benchmarks
        pytest.skip("BENCHMARKS.md does not exist yet")
    headings = re.findall(r"^#{2,3} (.+)$", source.read_text(encoding="utf-8"), re.MULTILINE)
    for heading in headings:
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        assert plain.replace("*", "").strip() in benchmarks, heading


def test_readme_links_to_the_docs_pages():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((docs/[^)#\s]+)", readme)
    assert len(set(targets)) >= 8, targets
    for target in targets:
        assert (REPO / target).is_file(), target
