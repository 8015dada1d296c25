"""`finetune --plan`: what a run would do and a rough time, without training."""

from __future__ import annotations

from tltoolkit.training.policy import budget_epochs


def describe(training, misses: int, measure: bool) -> dict:
    """Prints and returns the plan of `training` (a `finetune._Training` after its decisions)."""
    from tltoolkit.training.head import sweep_settings

    config, decision, recipe = training.config, training.decision, training.recipe
    per_image = training._forward_seconds()
    train_images, images = len(training.train_table), len(training.usable)
    fine_tune = bool(decision.trained_stages) and config.fine_tune_epochs > 0
    phase1 = per_image * train_images
    # Training costs about three forward passes (forward, backward); the head alone is negligible.
    seconds, epoch_seconds = misses * per_image, 3 * per_image * train_images
    if measure:
        budget = budget_epochs(config.policy_budget, phase1, epoch_seconds)
        seconds += budget * epoch_seconds
        phase2 = (f"phase 2: freeze points tried within {budget} epochs of the full model (~"
                  f"{_duration(budget * epoch_seconds)}; {config.policy_budget:g}x phase 1's cost), {recipe.describe()}")
    elif fine_tune:
        seconds += epoch_seconds * recipe.epochs
        phase2 = f"phase 2: {' + '.join(decision.trained_stages)} + head, {recipe.describe()}"
    else:
        phase2 = "phase 2: none (nothing unfrozen)"
    settings = sweep_settings(config.l2, config.dropout, config.learning_rate, config.hidden)
    lines = [*training.notes,
             f"cache: {images - misses} hits, {misses} to extract ({training.extractor.spec.key()})",
             f"phase 1: head on cached features, {len(settings)} settings, up to {config.epochs} epochs "
             f"(patience {config.head_patience})",
             phase2,
             f"estimated time: at most ~{_duration(seconds)} on this machine (rough: forward passes timed on one batch)",
             f"run directory: {training.out}"]
    for line in lines:
        training.echo(line)
    return {"plan": lines, "decision": decision.freeze_until, "misses": misses, "estimated_seconds": seconds}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
