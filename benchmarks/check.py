"""python -m benchmarks.check METHOD [--plugin ...]: the method contract, checked on any registered method.

  python -m benchmarks.check ce
  python -m benchmarks.check coral                          # an installed plugin (entry point)
  python -m benchmarks.check my_method --plugin my_method.py
  python -m benchmarks.check all                            # every registered method, one after another

What ``methods/registry.py`` asks of a method, tried on tiny synthetic batches (B = 4
random crops of 32 slices of 32 x 32, random labels and attributes) on the CPU, for
K = 3 and K = 2 classes; one line per check, and the exit status says it all: 0 every
check passed, 1 a check failed (its name is in the last line), 2 a mistake of the user
(an unknown method, a plugin that does not load). A method with a ``text_encoder``
field is checked with the small random text tower ``tiny-random`` (the contract is the
method's code, not its text weights; ``--set text_encoder=...`` checks another). The
registry tests (``tests/test_methods.py``) run these same checks on every built-in
method and every plugin named in ``$CLIPLUNG_PLUGINS`` or installed.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from benchmarks.cli import ArgumentParser, add_plugin_flag, load_plugins, refuse_unknown_methods
from benchmarks.errors import UserError, cli_main

ATTRIBUTES = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation", "spiculation", "texture")
B = 4  # batch of the checks: enough for two classes in a batch, small enough for seconds per method
FIT_STEPS = 4  # losses of the smoke fit: the first, then after each of 3 Adam steps
ROW_TOL = 1e-5  # rows of probabilities sum to 1 within this (float32 arithmetic)


class CheckFailed(Exception):
    """A check's finding, in one line."""


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    seconds: float


def info(k: int):
    """The ``DataInfo`` of a K-class training set (ordinal class names, the 8 attributes)."""
    from methods import DataInfo  # noqa: PLC0415

    names = ("benign", "unsure", "malignant") if k == 3 else ("benign", "malignant")
    return DataInfo(k, names, ATTRIBUTES, (10, 20, 5) if k == 3 else (12, 7))


def batch(k: int, n: int = B, seed: int = 0) -> dict:
    """Random crops (n, 32, 32, 32) in [0, 1], every class present when n >= k, attributes in [1, 5]."""
    import torch  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 32, 32, 32, generator=g), "label": torch.arange(n) % k,
            "attributes": 1 + 4 * torch.rand(n, len(ATTRIBUTES), generator=g)}


def config_for_checks(method, sets=()):
    """The method's registered config with ``sets`` applied; a text encoder, unless set, is ``tiny-random``."""
    from benchmarks.config import TrainConfig, apply_overrides  # noqa: PLC0415

    cfg = method.config
    if hasattr(cfg, "text_encoder") and not any(s.split("=", 1)[0].strip() == "text_encoder" for s in sets):
        cfg = dataclasses.replace(cfg, text_encoder="tiny-random")
    return apply_overrides({"train": TrainConfig(), "method": cfg}, list(sets))["method"]


class _Case:
    """One method under check: fresh seeded models of it, and their outputs on the check batch
    (computed once, shared by the checks that read them)."""

    def __init__(self, method, cfg):
        self.method, self.cfg = method, cfg
        self._seen: dict[int, dict] = {}

    def build(self, k: int, seed: int = 0):
        import torch  # noqa: PLC0415

        torch.manual_seed(seed)
        return self.method.cls(self.cfg, info(k))

    def seen(self, k: int) -> dict:
        """{"model", "batch", "train": train-mode outputs (with their graph), "eval": eval-mode outputs} for K = k."""
        import torch  # noqa: PLC0415

        if k not in self._seen:
            model, b = self.build(k).train(), batch(k)
            torch.manual_seed(1)
            train = model(b)
            model.eval()
            torch.manual_seed(1)
            with torch.no_grad():
                evald = model(b)
            self._seen[k] = {"model": model, "batch": b, "train": train, "eval": evald}
        return self._seen[k]


def _is_prob_rows(p, k: int, where: str) -> None:
    import torch  # noqa: PLC0415

    if not isinstance(p, torch.Tensor):
        raise CheckFailed(f"{where}: predict returned a {type(p).__name__}, not a tensor")
    if tuple(p.shape) != (B, k):
        raise CheckFailed(f"{where}: predict gave shape {tuple(p.shape)}, not (B, K) = ({B}, {k})")
    p = p.detach().float()
    if not torch.isfinite(p).all():
        raise CheckFailed(f"{where}: predict gave values that are not finite")
    if (p < 0).any() or (p > 1).any():
        raise CheckFailed(f"{where}: predict gave values outside [0, 1] (min {float(p.min()):.4g}, max {float(p.max()):.4g})")
    worst = float((p.sum(1) - 1).abs().max())
    if worst > ROW_TOL:
        raise CheckFailed(f"{where}: rows of predict sum to 1 +- {worst:.3g}, not within {ROW_TOL:g}")


def check_interface(case: _Case) -> str:
    from methods.registry import check_interface as interface  # noqa: PLC0415

    problem = interface(case.method)
    if problem:
        raise CheckFailed(problem)
    return "nn.Module with a frozen Config, forward, loss and predict"


def check_attributes(case: _Case) -> str:
    from benchmarks.metrics import RULES  # noqa: PLC0415

    cls = case.method.cls
    # The rule is read from a model, as the metrics read it: it may follow the config (a property, as CORF's).
    version, label, rule = getattr(cls, "version", 1), getattr(cls, "label", None), getattr(case.build(3), "decision_rule", "argmax")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckFailed(f"version {version!r} is not an integer >= 1")
    if label is not None and not (isinstance(label, str) and label.strip() and "\n" not in label):
        raise CheckFailed(f"label {label!r} is neither None nor a one-line, non-empty string")
    if rule not in RULES:
        raise CheckFailed(f"decision_rule {rule!r} is not one of {', '.join(RULES)}")
    return f"version {version}, label {case.method.label!r}, decision_rule {rule!r}"


def check_config_round_trip(case: _Case) -> str:
    """Every field, given back to ``--set`` as the text a user would type (its repr), gives the same config."""
    from benchmarks.config import TrainConfig, apply_overrides  # noqa: PLC0415

    cfg = case.cfg
    fields = [f.name for f in dataclasses.fields(cfg)]
    for name in fields:
        value = getattr(cfg, name)
        try:
            back = apply_overrides({"train": TrainConfig(), "method": cfg}, [f"{name}={value!r}"])["method"]
        except UserError as e:
            raise CheckFailed(f"--set {name}={value!r} is refused: {e}") from None
        if back != cfg or type(getattr(back, name)) is not type(value):
            raise CheckFailed(f"--set {name}={value!r} gives {getattr(back, name)!r}, not the field's value")
    return f"{len(fields)} field(s)" + (f": {', '.join(fields)}" if fields else "")


def check_search_space(case: _Case) -> str:
    """The method's tuning space (``Config.SEARCH`` and the shared one, ``benchmarks.space``) as ``tune run``
    checks it before any trial: fields of its configs, of their types, inside their ``RANGES`` and
    ``CHOICES``, and holding the registered defaults (the first trial of every study)."""
    from benchmarks.config import TrainConfig  # noqa: PLC0415
    from benchmarks.space import space_of  # noqa: PLC0415

    defaults = {**dataclasses.asdict(TrainConfig()), **dataclasses.asdict(case.method.config)}
    try:
        space = space_of(case.method, defaults=defaults)
    except UserError as e:
        raise CheckFailed(str(e).removeprefix(f"{case.method.name}: ")) from None
    return "; ".join(f"{k} {d.describe()}" for k, d in space.items())


def check_forward_dict(case: _Case) -> str:
    for k in (3, 2):
        for mode in ("train", "eval"):
            out = case.seen(k)[mode]
            if not isinstance(out, dict):
                raise CheckFailed(f"K={k}, {mode} mode: forward returned a {type(out).__name__}, not a dict")
    return "train and eval mode, K = 3 and 2"


def check_predict(case: _Case) -> str:
    import torch  # noqa: PLC0415

    for k in (3, 2):
        seen = case.seen(k)
        with torch.no_grad():
            for mode in ("train", "eval"):
                seen["model"].train(mode == "train")
                _is_prob_rows(seen["model"].predict(seen[mode]), k, f"K={k}, {mode} mode")
    return f"(B, K) rows in [0, 1] summing to 1 within {ROW_TOL:g}, train and eval mode"


def check_predict_blind(case: _Case) -> str:
    """At test time a method sees images only: its eval-mode forward and predict give the same
    probabilities without labels and attributes, and with other ones."""
    import torch  # noqa: PLC0415

    for k in (3,):  # what reaches predict does not depend on K; one K halves the cost
        seen = case.seen(k)
        model, b = seen["model"].eval(), seen["batch"]
        with torch.no_grad():
            given = model.predict(seen["eval"]).float()
        runs = {"without label and attributes": {"image": b["image"]},
                "with other labels and attributes": {"image": b["image"], "label": (b["label"] + 1) % k,
                                                     "attributes": 6 - b["attributes"]}}
        for what, bb in runs.items():
            torch.manual_seed(1)
            try:
                with torch.no_grad():
                    got = model.predict(model(bb)).float()
            except KeyError as e:
                raise CheckFailed(f"K={k}: the eval-mode forward or predict reads batch[{e.args[0]!r}]") from None
            if got.shape != given.shape or not torch.allclose(got, given, rtol=0, atol=1e-6):
                raise CheckFailed(f"K={k}: the predictions change {what} (labels or attributes reach predict)")
    return "the same probabilities without labels and attributes, and with other ones"


def check_loss_gradients(case: _Case) -> str:
    import torch  # noqa: PLC0415

    for k in (3, 2):
        seen = case.seen(k)
        model, b = seen["model"].train(), seen["batch"]
        terms = model.loss(seen["train"], b)
        if not isinstance(terms, dict) or "loss" not in terms:
            raise CheckFailed(f"K={k}: loss returned {type(terms).__name__} without a 'loss' entry")
        for name, v in terms.items():
            if not (isinstance(v, torch.Tensor) and v.numel() == 1 and torch.isfinite(v).all()):
                raise CheckFailed(f"K={k}: loss term {name!r} is not a finite scalar tensor")
        model.zero_grad(set_to_none=True)
        terms["loss"].backward(retain_graph=True)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        none = [n for n, p in params if p.grad is None]
        if none:
            raise CheckFailed(f"K={k}: no gradient reaches {len(none)} of {len(params)} trainable parameters: "
                              + ", ".join(none[:4]) + (", ..." if len(none) > 4 else ""))
        bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
        if bad:
            raise CheckFailed(f"K={k}: gradients are not finite for " + ", ".join(bad[:4]))
    return f"finite terms ({', '.join(terms)}); a gradient reaches each of the {len(params)} trainable parameters"


def _seeded_run(case: _Case, seed: int):
    """Build with ``seed``, the training loss of the check batch, then eval-mode probabilities."""
    import torch  # noqa: PLC0415

    model = case.build(3, seed).train()
    b = batch(3)
    with torch.no_grad():
        loss = float(model.loss(model(b), b)["loss"])
        model.eval()
        return loss, model.predict(model(b)).float()


def check_seeded(case: _Case) -> str:
    import torch  # noqa: PLC0415

    (l1, p1), (l2, p2) = _seeded_run(case, 7), _seeded_run(case, 7)
    if l1 != l2 or not torch.allclose(p1, p2, rtol=0, atol=1e-7):
        raise CheckFailed(f"two runs with seed 7 differ: loss {l1!r} vs {l2!r}, probabilities by {float((p1 - p2).abs().max()):.3g}")
    return "built, trained-mode loss and predictions, twice with one seed: the same numbers"


def check_smoke_fit(case: _Case) -> str:
    """A few Adam steps on one fixed batch lower its loss (the model can learn at all)."""
    import torch  # noqa: PLC0415

    model = case.build(3).train()
    b = batch(3, seed=1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for i in range(FIT_STEPS):
        torch.manual_seed(3)  # the same draw of whatever is random in the forward at every step
        loss = model.loss(model(b), b)["loss"]
        losses.append(float(loss.detach()))
        if i == FIT_STEPS - 1:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    before, after = losses[0], losses[-1]
    if not (math.isfinite(after) and after < before):
        raise CheckFailed(f"{FIT_STEPS - 1} Adam steps (lr 2e-3) on one batch take its loss from {before:.4g} to {after:.4g}")
    return f"{FIT_STEPS - 1} Adam steps on one batch: loss {before:.4g} -> {after:.4g}"


CHECKS: dict[str, Callable[[_Case], str]] = {
    "interface": check_interface,
    "attributes": check_attributes,
    "config round-trips through --set": check_config_round_trip,
    "search space inside the config's ranges": check_search_space,
    "forward returns a dict": check_forward_dict,
    "predict gives probabilities": check_predict,
    "predict reads no labels or attributes": check_predict_blind,
    "loss finite, gradient to every parameter": check_loss_gradients,
    "one seed, one result": check_seeded,
    "smoke fit lowers the loss": check_smoke_fit,
}


def run_check(case: _Case, check: str) -> Result:
    """One check of a method under check, as a :class:`Result` (never an exception of the method's)."""
    import torch  # noqa: PLC0415

    t = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            detail, ok = CHECKS[check](case), True
    except CheckFailed as e:
        detail, ok = str(e), False
    except Exception as e:  # noqa: BLE001  the method's own error is a finding of the check, in one line
        first = (str(e).strip().splitlines() or [""])[0]
        detail, ok = f"{type(e).__name__}: {first}", False
    return Result(check, ok, detail, time.perf_counter() - t)


def case_of(name: str, sets=()) -> _Case:
    """Method ``name`` under check (its models built when a check first needs them)."""
    import methods  # noqa: PLC0415

    m = methods.get_method(name)
    return _Case(m, config_for_checks(m, sets))


def run_checks(name: str, sets=(), checks=None, report: Callable[[Result], None] | None = None) -> list[Result]:
    """Every check (or ``checks``) of method ``name`` (registered; plugins loaded by the caller), in
    order; ``report`` is called after each. A bad ``--set`` is a UserError."""
    case = case_of(name, sets)
    out = []
    for check in checks or CHECKS:
        r = run_check(case, check)
        out.append(r)
        if report:
            report(r)
    return out


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m benchmarks.check", description=__doc__)
    ap.add_argument("method", help="a registered method, or all")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="check the method with this config override (repeatable)")
    add_plugin_flag(ap)
    return ap


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    if args.method != "all":
        refuse_unknown_methods([args.method], args.plugin)  # before torch: a typo answers at once
    load_plugins(args)
    import torch  # noqa: PLC0415

    import methods  # noqa: PLC0415

    torch.set_num_threads(min(torch.get_num_threads(), 4))  # a tiny batch gains nothing from more
    names = sorted(methods.REGISTRY) if args.method == "all" else [methods.get_method(args.method).name]
    width = max(map(len, CHECKS))
    failed = []
    for name in names:
        print(f"{name} ({methods.REGISTRY[name].origin.get('plugin') if methods.REGISTRY[name].origin else 'built in'}):")
        results = run_checks(name, args.set, report=lambda r: print(f"  {'ok  ' if r.ok else 'FAIL'}  {r.name:{width}s}  {r.detail}  ({r.seconds:.1f} s)",
                                                                       flush=True))
        failed += [(name, r.name) for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} check(s) failed: " + "; ".join(f"{n}: {c}" for n, c in failed))
    print(f"every check passed ({len(names)} method(s), {len(CHECKS)} checks each)")


if __name__ == "__main__":
    main()
