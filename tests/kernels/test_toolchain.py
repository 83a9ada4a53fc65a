"""The kernel toolchain in one process: its import graph, its checksums, and what it does with a bad cache entry.
(The damaged states that could kill a process are in tests/reliability/test_kernel_cache.py, in subprocesses.)"""

import ast
from pathlib import Path

import pytest

from zolab.kernels import toolchain

KERNELS = Path(toolchain.__file__).parent
TWO = "int f(void) { return 1; }\nint g(void) { return 2; }\n"


def _imports(path: Path) -> set[str]:
    """The zolab.kernels modules that ``path`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zolab.kernels"):
            if node.module == "zolab.kernels":
                out |= {f"zolab.kernels.{a.name}" for a in node.names if (KERNELS / f"{a.name}.py").exists()}
            else:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("zolab.kernels.")}
    return out


def test_no_kernels_module_imports_itself_through_others():
    graph = {f"zolab.kernels.{p.stem}": _imports(p) for p in KERNELS.glob("*.py") if p.stem != "__init__"}

    def reach(start, seen):
        for nxt in graph.get(start, ()):
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)
        return seen

    cycles = [m for m in graph if m in reach(m, set())]
    assert cycles == [], f"import cycles through {cycles}: {graph}"
    assert "zolab.kernels.codegen" not in graph["zolab.kernels.cpu"]
    assert "zolab.kernels.cpu" not in graph["zolab.kernels.codegen"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh toolchain state on an empty cache, with a private folder of this test's own."""
    if toolchain._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("ZOLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "private").mkdir()
    for name, value in (("_home", None), ("_resolved", False), ("_read_only", False),
                        ("_private_dir", tmp_path / "private")):
        monkeypatch.setattr(toolchain, name, value)
    return tmp_path / "cache"


def test_a_library_lands_in_the_cache_with_a_checksum_naming_it(cache):
    lib = toolchain.library("zo_test", TWO, ["f", "g"])
    (so,) = cache.glob("zo_test_*.so")
    digest, name = (so.parent / (so.name + ".sha256")).read_text().split()
    assert (lib.f(), lib.g(), name) == (1, 2, so.name)
    assert toolchain._damage(so) is None
    so.write_bytes(so.read_bytes()[:-1])
    assert "do not match" in toolchain._damage(so)


def test_a_verified_library_lacking_a_symbol_is_replaced_by_a_private_copy(cache, tmp_path):
    cache.mkdir()
    # A library of one symbol, with a valid checksum, under the name of TWO's library: forged, not damaged.
    forged = toolchain._compile(cache, toolchain._filename("zo_test", TWO), "int f(void) { return 1; }\n",
                                toolchain._compiler()[0])
    with pytest.warns(UserWarning, match="cannot be used.*'g'.*compiling a private copy"):
        lib = toolchain.library("zo_test", TWO, ["f", "g"])
    assert lib.g() == 2
    assert (tmp_path / "private" / forged.name).exists()


def test_a_cached_source_that_differs_from_its_name_is_rewritten(cache):
    path = toolchain.cached_text("triton/program_x.py", "kernel = 1\n")
    assert path.parent.parent == cache
    path.write_text("kernel = ")  # cut short
    with pytest.warns(UserWarning, match="not the source it is named for"):
        assert toolchain.cached_text("triton/program_x.py", "kernel = 1\n").read_text() == "kernel = 1\n"
