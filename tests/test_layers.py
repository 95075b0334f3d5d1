"""The edge package's layers (STYLE: CLI -> watch -> classifier/http -> runtime/preprocess -> bundle/sources -> pure
helpers), read from the source itself: no module imports one of a higher layer, even inside a function, there is no
import cycle, and LiteRT is imported in one module only. A new module must be given its layer here."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "edge"

LAYERS = {  # higher imports lower, never the other way
    6: "_entry cli",
    5: "watch config capture lookahead places reload track fieldset",
    4: "classifier tta httpd session_http review_page session session_export session_report retention saver",
    3: "runtime preprocess crop_scale",
    2: "bundle bundle_v1 provenance packaged sources outputs precious diskspace",
    1: "differential field frameread illumination noise ood postprocess scale self_train site stain sysinfo",
    0: "__init__ _quiet errors shutdown",
}
LAYER = {m: n for n, names in LAYERS.items() for m in names.split()}
LITERT = ("ai_edge_litert", "tflite_runtime")


def _edge_imports(path: Path) -> list[tuple[str, int]]:
    """(edge module imported, line) for every import of a sibling in ``path``, at any depth (functions too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1:  # from .x import y / from . import x
                names = [mod.split(".")[0]] if mod else [a.name for a in node.names]
            elif mod.startswith("scopelite.edge"):
                rest = mod[len("scopelite.edge"):].lstrip(".")
                names = [rest.split(".")[0]] if rest else [a.name for a in node.names]
            else:
                continue
            out += [(n, node.lineno) for n in names if (EDGE / f"{n}.py").exists()]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("scopelite.edge."):
                    out.append((a.name.split(".")[2], node.lineno))
    return out


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {p.stem: _edge_imports(p) for p in sorted(EDGE.glob("*.py"))}


def test_every_edge_module_has_a_layer():
    assert sorted(set(_graph()) - set(LAYER)) == []


def test_no_edge_module_imports_one_of_a_higher_layer():
    upward = [f"edge/{m}.py:{line} ({LAYER[m]}) imports {n} ({LAYER[n]})"
              for m, deps in _graph().items() for n, line in deps
              if m != "__init__" and LAYER.get(n, -1) > LAYER.get(m, 99)]  # __init__'s lazy attributes re-export bundle
    assert upward == []


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    edges = {m: {n for n, _ in deps if n != m} for m, deps in graph.items() if m != "__init__"}
    cycles, state = [], {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return cycles


def test_the_edge_package_has_no_import_cycle():
    assert _cycles(_graph()) == []


def test_litert_is_imported_in_edge_runtime_alone():
    found = []
    for folder in ("edge", "train", "compress", "benchmarks", "tools"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(p.read_text(), str(p))):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{p.relative_to(ROOT)}:{node.lineno}" for m in mods if m.split(".")[0] in LITERT]
    assert found and all(f.startswith("edge/runtime.py:") for f in found), found


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The reader itself: a pure module importing watch inside a function is found, and so is the cycle it makes."""
    (tmp_path / "stain.py").write_text("def f():\n    from .watch import x\n")
    (tmp_path / "watch.py").write_text("from scopelite.edge import stain\n")
    monkeypatch.setattr(sys.modules[__name__], "EDGE", tmp_path)
    graph = _graph()
    assert graph == {"stain": [("watch", 2)], "watch": [("stain", 1)]}
    assert [m for m, deps in graph.items() for n, _ in deps if LAYER[n] > LAYER[m]] == ["stain"]
    assert _cycles(graph) == ["stain -> watch -> stain"]
