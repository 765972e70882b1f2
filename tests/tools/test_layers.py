"""The import layering (benchmark.tools.layers): the package keeps it, and the check finds each
kind of breach in a package that makes them."""

from __future__ import annotations

from pathlib import Path

from benchmark.tools.layers import MAX_LINES, problems


def test_the_package_keeps_its_layering() -> None:
    assert list(problems()) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "benchmark" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "benchmark"


def test_the_check_finds_an_upward_import_a_stage_importing_a_stage_a_circle_and_a_long_module(tmp_path: Path) -> None:
    package = _write(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "utils/__init__.py": "",
        "utils/io.py": "def helper():\n    from benchmark.driver.run import main  # inside a function: still an import\n",
        "driver/__init__.py": "",
        "driver/run.py": "from benchmark.utils import io\n",
        "stages/__init__.py": "",
        "stages/kinds.py": "",
        "stages/catalogue.py": "from benchmark.stages import finetune, probe\n",
        "stages/finetune.py": "from benchmark.stages.kinds import x\nfrom benchmark.stages.probe import y\n",
        "stages/probe.py": "from benchmark.stages import kinds\n",
        "data/__init__.py": "",
        "data/a.py": "from . import b\n",
        "data/b.py": "from benchmark.data import a\n",
        "models/__init__.py": "",
        "models/long.py": "x = 1\n" * (MAX_LINES + 1),
    })
    found = list(problems(package))
    assert found == [
        "benchmark.stages.finetune imports benchmark.stages.probe: a stage imports only ['cli', 'cost', 'kinds'] of stages/",
        "benchmark.utils.io imports benchmark.driver.run: driver is not below utils",
        "import circle: benchmark.data.a -> benchmark.data.b",
        "import circle: benchmark.driver.run -> benchmark.utils.io",
        f"benchmark.models.long: {MAX_LINES + 1} lines (at most {MAX_LINES})",
    ]
