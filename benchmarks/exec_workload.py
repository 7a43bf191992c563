"""Synthetic step-program workloads for bench_executor.py.

Steps look like the reference's SFT examples: sympy symbols, solve, simplify,
Matrix, numpy arrays, math.comb, prints. A chain of 1-8 steps gives one
cumulative program per prefix (what the search executes per node). About 10%
of the programs raise (NameError, ZeroDivisionError, ...), about 2% never end
(a chain stops at its raising step, so `p_raise` = 0.14 per step gives ~10%).
"""

from __future__ import annotations

import random
from typing import List, Tuple

SETUP = [
    "import sympy as sp\nx, y = sp.symbols('x y')\na, b, c = {a}, {b}, {c}",
    "import sympy as sp\nimport numpy as np\nx = sp.Symbol('x')\na, b, c = {a}, {b}, {c}",
    "import math\nimport sympy as sp\nfrom sympy import symbols, Rational\nx = symbols('x')\na, b, c = {a}, {b}, {c}",
]
STEPS = [
    "# Solve the quadratic\nroots = sp.solve(a*x**2 + b*x - c, x)\nprint(roots)",
    "# Simplify a rational expression\nexpr = sp.simplify((x**2 - {a}**2) / (x - {a}))\nexpr",
    "# Sum of the first n integers\nn = {n}\ntotal = sum(range(1, n + 1))\nprint(total)",
    "# Choose k of n\nfrom math import comb\nways = comb({n}, {k})\nprint(ways)",
    "# A fraction\nfrac = sp.Rational(a, b + c)\nprint(frac, float(frac))",
    "# Vector norm with numpy\nimport numpy as np\nv = np.array([a, b, c], dtype=float)\nprint(np.linalg.norm(v))",
    "# Determinant\nM = sp.Matrix([[a, b], [c, {n}]])\ndet = M.det()\nprint(det)",
    "# Expand a product\nexpanded = sp.expand((x + a) * (x - b) * (x + c))\nprint(expanded)",
    "# Numeric root\nimport math\nr = math.sqrt(a * b + c)\nprint(r)",
    "# Derivative\nd = sp.diff(x**{k} * sp.sin(x), x)\nprint(d)",
    "# Series sum\ns = sp.summation(1 / sp.Symbol('m')**2, (sp.Symbol('m'), 1, {n}))\nprint(s)",
    "# Mean of an array\nimport numpy as np\narr = np.arange(1, {n} + 1)\nprint(arr.mean(), arr.std())",
    "# Factor an integer\nfactors = sp.factorint({big})\nprint(factors)",
    "# Integrate\narea = sp.integrate(x**2 + a * x, (x, 0, b))\nprint(area)",
    "# Percentage\npct = a / (a + b + c) * 100\nprint(f'{{pct:.2f}}%')",
]
RAISING = [
    "# Use the value from before\nresult = undefined_total + 1\nprint(result)",
    "# Divide by the difference\nratio = a / (b - b)\nprint(ratio)",
    "# Parse the count\ncount = int('twelve')\nprint(count)",
    "# Invert the matrix\nimport numpy as np\ninv = np.linalg.inv(np.zeros((2, 2)))\nprint(inv)",
    "# Index the roots\nfirst = [][0]\nprint(first)",
]
ENDLESS = [
    "# Search for the answer\nk = 0\nwhile True:\n    k += 1",
    "# Wait for convergence\nimport time\ntime.sleep(60)",
]
FINAL = "# Now print the final answer\nprint(a + b + c)"


def _fill(template: str, rng: random.Random) -> str:
    return template.format(a=rng.randint(1, 9), b=rng.randint(1, 9), c=rng.randint(1, 9),
                           n=rng.randint(5, 40), k=rng.randint(1, 4), big=rng.randint(10**5, 10**7))


def chains(n_programs: int, seed: int = 0, p_raise: float = 0.14, p_endless: float = 0.02):
    """Chains of steps whose cumulative programs total ~`n_programs`.

    Returns:
      list of (program, kind) with kind in {"ok", "raise", "endless"}; a chain
      stops at its raising or endless step, as a tree node with an error does.
    """
    rng = random.Random(seed)
    out: List[Tuple[str, str]] = []
    while len(out) < n_programs:
        steps = [_fill(rng.choice(SETUP), rng)]
        out.append((steps[0], "ok"))
        length = rng.randint(1, 8)
        while len(steps) < length and len(out) < n_programs:
            u = rng.random()
            if u < p_endless:
                kind, step = "endless", _fill(rng.choice(ENDLESS), rng)
            elif u < p_endless + p_raise:
                kind, step = "raise", _fill(rng.choice(RAISING), rng)
            elif len(steps) == length - 1:
                kind, step = "ok", FINAL
            else:
                kind, step = "ok", _fill(rng.choice(STEPS), rng)
            steps.append(step)
            out.append(("\n".join(steps), kind))
            if kind != "ok":
                break
    return out[:n_programs]


def tree_rounds(n_trees: int = 10, depth: int = 6, n_candidates: int = 4, n_variants: int = 3,
                n_expand: int = 2, seed: int = 1):
    """A tree-shaped workload, one batch per expansion round (depth level).

    Each expanded node samples `n_candidates` steps from `n_variants` distinct
    ones (so sibling duplicates are common, as with temperature sampling);
    each candidate's program is its parent's program plus the step; the first
    `n_expand` distinct candidates are expanded next round.

    Returns:
      list of rounds, each a list of programs.
    """
    rng = random.Random(seed)
    frontier = [_fill(rng.choice(SETUP), rng) for _ in range(n_trees)]
    rounds = [list(frontier)]
    for _ in range(depth - 1):
        batch, nxt = [], []
        for parent in frontier:
            variants = [_fill(rng.choice(STEPS), rng) for _ in range(n_variants)]
            picks = [rng.choice(variants) for _ in range(n_candidates)]
            # Some duplicates differ only in their comment: the cache key ignores it.
            picks = [p.replace("\n", " (again)\n", 1) if p.startswith("#") and rng.random() < 0.3 else p
                     for p in picks]
            progs = [parent + "\n" + step for step in picks]
            batch.extend(progs)
            for p in dict.fromkeys(progs):
                if len(nxt) < n_trees * n_expand ** 2 and p not in nxt:
                    nxt.append(p)
                    if sum(1 for q in nxt if q.startswith(parent)) >= n_expand:
                        break
        rounds.append(batch)
        frontier = nxt[: n_trees * n_expand]
    return rounds
