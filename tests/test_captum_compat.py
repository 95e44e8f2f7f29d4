"""captum_smocam._captum_compat is the one place that imports Captum's private helpers."""
import ast
from pathlib import Path

import captum_smocam
from captum_smocam import _captum_compat

PACKAGE = Path(captum_smocam.__file__).parent


def _captum_imports(path: Path):
    """``(line, module)`` of every ``import captum...`` / ``from captum... import`` in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "captum":
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "captum")


def test_no_other_module_imports_captum_internals():
    private = [
        f"{path.relative_to(PACKAGE)}:{line}: {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_captum_compat.py"
        for line, module in _captum_imports(path)
        if module.startswith("captum.log") or any(part.startswith("_") for part in module.split("."))
    ]
    assert private == [], "import Captum's private helpers through captum_smocam._captum_compat"


def test_every_name_it_offers_is_used_by_the_package():
    """An import no module needs is one more way for a Captum upgrade to break the package."""
    sources = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py") if p.name != "_captum_compat.py")
    unused = [name for name in _captum_compat.__all__ if name not in sources]
    assert unused == []
