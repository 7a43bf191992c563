"""Every notebook runs (nbclient) against small artifacts made here."""

import os

import nbformat
from nbclient import NotebookClient

from rstar_jax.config.schema import Config, replace
from rstar_jax.evaluation import analysis, harness
from testutil import REPO

NOTEBOOKS = REPO / "notebooks"


def run_notebook(name, tmp_path, monkeypatch, **env):
    for k, v in {**env,
                 "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                 "JAX_PLATFORMS": "cpu"}.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def outputs_text(nb):
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            data = o.get("data", {})
            out.append(data.get("text/markdown", "") + data.get("text/plain", ""))
    return "\n".join(out)


def make_eval_dirs(tmp_path, shared_data):
    """Two runs over 4 MATH500 and 4 GSM8K problems with fixed predictions."""
    cfg = Config()
    cfg = replace(cfg, eval=replace(cfg.eval, benchmark_dir=str(shared_data / "benchmarks"),
                                    limit=4, bootstrap_samples=50),
                  logging=replace(cfg.logging, progress=False))

    def runner(right):
        def run(method, problems, cfg):
            out = []
            for i, p in enumerate(problems):
                gold = p.answer[0] if isinstance(p.answer, tuple) else p.answer
                pred = gold if i < right else "wrong"
                out.append(harness.result_for(p, "", method, preds=[pred, gold],
                                              scores=[0.9, 0.1], generated_tokens=100 * (i + 1)))
            return out
        return run
    dirs = []
    for method, right in (("greedy", 1), ("best_of_n", 3)):
        d = tmp_path / method
        harness.evaluate(cfg, ["math500", "gsm8k"], method, str(d), run_method=runner(right))
        dirs.append(str(d))
    return dirs


def test_analysis_tables_by_hand(tmp_path, shared_data):
    dirs = make_eval_dirs(tmp_path, shared_data)
    runs = [analysis.load_run(d) for d in dirs]
    table = analysis.accuracy_table(runs)
    # greedy: 1 of 4 right on both -> 25.0, avg 25.0; best_of_n: 3 of 4 -> 75.0.
    assert "| Method | MATH | GSM8K | Avg. |" in table
    assert "| greedy (greedy) | 25.0 | 25.0 | 25.0 |" in table
    assert "| best_of_n (best_of_n) | 75.0 | 75.0 | 75.0 |" in table
    # tokens 100, 200, 300, 400 -> mean 250
    assert "| greedy (greedy) | 250 | 250 |" in analysis.tokens_table(runs)
    assert analysis.level_table(runs).startswith("| Method | Level ")


def test_evaluation_report_notebook(tmp_path, shared_data, monkeypatch):
    dirs = make_eval_dirs(tmp_path, shared_data)
    nb = run_notebook("evaluation_report.ipynb", tmp_path, monkeypatch,
                      RSTAR_EVAL_DIRS=",".join(dirs))
    text = outputs_text(nb)
    assert "| best_of_n (best_of_n) | 75.0 | 75.0 | 75.0 |" in text
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))


def test_notebooks_define_no_model_code():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "import rstar_jax" in src or "from rstar_jax" in src, path.name
        for banned in ("nnx.Module", "class ", "def __call__", "flax"):
            assert banned not in src, (path.name, banned)


