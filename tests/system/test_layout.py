"""The package's layout: every import runs from a higher stage to a lower one (or within one),
and no files import one another round a circle."""

import ast
from pathlib import Path

import melanoma

ROOT = Path(melanoma.__file__).parent

# Stages, lowest first. Shared pieces (the config, the metrics, targets, progress bars, file
# writing) sit at the bottom; networks below the data steps, because deduplication embeds images
# with one; the run directory above everything that trains or reads a run needs.
STAGES = [
    {"config", "metrics", "progress", "targets", "fileio", "allocator", "plots"},
    {"models"},
    {"inputs"},
    {"data"},
    {"synthetic"},
    {"rundir", "results", "run"},
    {"training"},
    {"evaluation", "card"},  # the card: also the README of a timm export
    {"experiments", "tabular"},
    {"report"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}


def _stage(module: str) -> str:
    """melanoma.data.ingest -> data; melanoma.config -> config."""
    return module.split(".")[1]


def _imports(path: Path, modules: dict | None = None) -> set[str]:
    """Every melanoma.* module a file imports, at the top or inside functions (`from pkg import
    mod` counts as importing pkg.mod when that is one of `modules`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("melanoma"):
            if node.module == "melanoma":  # from melanoma import __version__ (the package itself)
                found.update(f"melanoma.{a.name}" for a in node.names if not a.name.startswith("__"))
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if modules and sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("melanoma."))
    return found


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts == ("melanoma", "__init__"):  # the package itself
            continue
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_every_module_has_a_stage():
    missing = sorted({_stage(m) for m in _modules()} - set(RANK))
    assert not missing, f"modules or folders without a stage in STAGES: {missing}"


def test_no_import_runs_from_a_lower_stage_to_a_higher_one():
    upward = []
    for module, path in _modules().items():
        for target in _imports(path):
            if RANK[_stage(target)] > RANK[_stage(module)]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports from a lower stage to a higher one:\n" + "\n".join(sorted(upward))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import one another, directly or round a loop (Tarjan's
    strongly connected components of more than one module, or one importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1 or v in graph.get(v, ()):
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_between_files():
    modules = _modules()
    graph = {m: {t for t in _imports(p, modules) if t in modules and t != m} for m, p in modules.items()}
    assert circles(graph) == []


def test_the_circle_check_sees_a_circle(tmp_path):
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from melanoma.data import ingest\n")
    b.write_text("def f():\n    from melanoma.data.isic2024 import read_isic2024\n")
    modules = {"melanoma.data.ingest": a, "melanoma.data.isic2024": b}
    graph = {m: _imports(p, modules) for m, p in modules.items()}
    graph = {
        "melanoma.data.isic2024": graph["melanoma.data.isic2024"],
        "melanoma.data.ingest": {"melanoma.data.isic2024"},
    }
    graph["melanoma.data.isic2024"] |= _imports(a, modules)  # a lazy import back closes the loop
    assert circles(graph) == [["melanoma.data.ingest", "melanoma.data.isic2024"]]


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from melanoma.training.train import train\n")
    assert _imports(bad) == {"melanoma.training.train"}
    assert RANK[_stage("melanoma.training.train")] > RANK[_stage("melanoma.data.ingest")]


def test_each_stage_folder_says_what_it_owns():
    for folder in ROOT.iterdir():
        if folder.is_dir() and (folder / "__init__.py").is_file():
            assert ast.get_docstring(ast.parse((folder / "__init__.py").read_text())), folder


def test_every_training_setting_is_a_train_option():
    from typer.testing import CliRunner

    from melanoma.cli import app, config_options
    from melanoma.config import config_fields

    assert {p.name for p in config_options()} == config_fields()  # one place to add a setting
    text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for flag in ["--backbone", "--meta", "--no-meta", "--workers", "--sync-bn", "--no-sync-bn", "--k-folds"]:
        assert flag in text, flag


def test_every_file_of_a_data_folder_a_run_or_a_suite_has_one_owner():
    """The names of what the toolkit writes are spelled in one module each (data/folder.py for the
    data folder, rundir.py for a run, experiments/ablate.py for a suite), and a run's results
    are read through results.py alone: `grep -rn 'rundir.CALIBRATION\\b|rundir.OPERATING_POINTS|
    rundir.SUBGROUPS|current_result' src/` finds only results.py and rundir.py."""
    owners = {
        '"folds.csv"': {"data/folder.py", "rundir.py"},  # DATA/folds.csv, and a run's own copy
        '"duplicates.csv"': {"data/folder.py"},
        '"candidates.csv"': {"data/folder.py"},
        '"review.html"': {"data/folder.py"},
        '"suite.json"': {"experiments/ablate.py", "rundir.py"},  # rundir: what a suite folder may hold
        '"calibration.json"': {"rundir.py"},
        '"operating_points.json"': {"rundir.py"},
        '"subgroups.json"': {"rundir.py"},
    }
    readers = ("rundir.CALIBRATION)", "rundir.CALIBRATION ", "rundir.OPERATING_POINTS", "rundir.SUBGROUPS",
               "current_result(")  # fmt: skip
    found = []
    for path in ROOT.rglob("*.py"):
        name, text = path.relative_to(ROOT).as_posix(), path.read_text()
        quoted = [(q, q.replace('"', "'")) for q in owners]  # "name" or 'name'
        found += [
            f"{name} spells {q}" for q, q1 in quoted if name not in owners[q] and (q in text or q1 in text)
        ]
        if name not in ("results.py", "rundir.py"):
            found += [f"{name} reads a result with {r}" for r in readers if r in text]
    assert found == []


def test_functions_stay_short_and_commands_thin():
    """No function in src/ over 80 lines; no command body (docstring included) over 30: a command
    parses, calls one library function and renders."""
    long, fat = [], []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
            if node.end_lineno - node.lineno + 1 > 80:
                long.append(where)
            is_command = any("command" in ast.unparse(d) for d in node.decorator_list)
            if is_command and node.end_lineno - node.body[0].lineno + 1 > 30:
                fat.append(where)
    assert long == [] and fat == []


# rundir's readers of a run's files: only run.Run (and results.py, rundir.py themselves) call them.
RUN_READERS = {
    "run_config", "load_config", "is_tree_run", "tree_folds", "trained_folds", "unfinished_folds", "run_folds",
    "saved_oof", "is_trained", "metrics", "evaluations", "test_probs_by_fold", "latest_oof_name", "checkpoint_oof",
    "latest_oof", "current_result", "check_data", "require_image_run", "load_fold_model", "trained_state",
}  # fmt: skip
READS_RUNS = {"run.py", "results.py", "rundir.py"}


def run_reads(path: Path) -> list[str]:
    """Where a file reads a run other than through run.Run: a call of one of rundir's readers
    (rundir.X or imported from it), or json.load/json.loads of a file it did not make."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "rundir":
            if node.attr in RUN_READERS:
                found.append(f"{path.name}:{node.lineno} rundir.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "melanoma.rundir":
            found += [
                f"{path.name}:{node.lineno} imports {a.name}" for a in node.names if a.name in RUN_READERS
            ]
    return found


def test_only_run_reads_a_run():
    r"""Every reader of a run (the commands, the report, the card, the demo, the scorers) opens it as
    a run.Run and reads its results as results.py's types: `grep -rnE 'rundir\.(run_config|
    load_config|latest_oof|saved_oof|evaluations|current_result|...)' src/` finds only run.py,
    results.py and rundir.py (the list is RUN_READERS)."""
    found = []
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT).as_posix() not in READS_RUNS:
            found += run_reads(path)
    assert found == []
    # json.load elsewhere reads no run: review.py a browser's request, demo.py the cache stamp,
    # ablate.py suite.json, train.py and imported.py round-trip the config they write
    json_readers = sorted(
        p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if "json.load" in p.read_text()
    )
    assert json_readers == [
        "data/review.py",
        "demo.py",
        "experiments/ablate.py",
        "rundir.py",
        "training/imported.py",
        "training/train.py",
    ]


def test_the_run_check_sees_a_direct_read(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from melanoma import rundir\nfrom melanoma.rundir import latest_oof\nrundir.run_config(x)\n"
    )
    assert run_reads(bad) == ["bad.py:2 imports latest_oof", "bad.py:3 rundir.run_config"]


def test_the_tests_mirror_the_source():
    """tests/<folder>/ for each src/melanoma/<folder>/ (and tests/system/ for what cuts across); a
    test file is named after what it tests, and no test cites an issue: the code and docs/ say why."""
    import re

    tests = Path(__file__).resolve().parents[1]
    folders = {p.name for p in tests.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders - {"system"} <= {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    cited = [
        p.relative_to(tests).as_posix()
        for p in tests.rglob("*.py")
        if re.search(r"\bissue \d+", p.read_text())
    ]
    assert cited == []
    loose = {p.stem.removeprefix("test_") for p in tests.glob("test_*.py")}  # a top-level module's tests
    assert loose <= {p.stem for p in ROOT.glob("*.py")}, loose - {p.stem for p in ROOT.glob("*.py")}
