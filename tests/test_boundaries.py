"""Who may import what: library code never imports ``benchmarking``; scripts import no private module (issue 22)."""
import ast
from pathlib import Path

import captum_smocam
from captum_smocam import benchmarking, synth
from captum_smocam.benchmarking import data

PACKAGE = Path(captum_smocam.__file__).parent
SCRIPTS = PACKAGE.parent / "benchmarks"


def _imported_modules(path: Path, package: str):
    """``(line, absolute module)`` of every import in ``path`` (relative imports resolved against ``package``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield from ((node.lineno, f"{module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)


def test_library_code_never_imports_benchmarking():
    crossing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[1] == "benchmarking":
            continue
        package = ".".join(parts[:-1])  # the package a relative import starts from (also for __init__.py)
        crossing += [f"{path.relative_to(PACKAGE)}:{line}: {module}" for line, module in _imported_modules(path, package)
                     if module.startswith("captum_smocam.benchmarking")]
    assert crossing == [], "library code imports benchmarking; move what it needs into the library"


def test_benchmark_scripts_import_no_private_module():
    """Scripts use public names only."""
    private = [f"{path.name}:{line}: {module}" for path in sorted(SCRIPTS.glob("*.py"))
               for line, module in _imported_modules(path, "")
               if module.startswith("captum_smocam.") and any(p.startswith("_") and not p.startswith("__")
                                                               for p in module.split(".")[1:])]
    assert private == []


def test_structure_masks_come_from_synth_and_benchmarking_shares_them():
    assert data.structure_mask is synth.structure_mask and benchmarking.structure_label is synth.structure_label
    subject = synth.template(12.0)
    for name in ("left_hippocampus", "right_lateral_ventricle"):
        mask = synth.structure_mask(subject, name)
        assert mask.shape == subject.labels.shape and mask.any()
        assert (mask == (subject.labels == synth.structure_label(name))).all()
